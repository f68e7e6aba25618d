"""`python -m monkeyreport`: the command line (how `--jobs` starts its workers)."""

from monkeyreport.cli import app

app()
