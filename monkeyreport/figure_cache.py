"""Which report figures must be drawn again: a digest of each figure's inputs beside it.

Kept apart from figures.py so that a render whose figures are all current never imports
matplotlib and seaborn (about a second): drawing functions are named, and imported only
when one has to run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from monkeyreport.results import write_text

FIGURE_VERSION = 3  # bump to redraw every report figure after a change of style (3: no alpha)


def inputs_digest(*parts: object) -> str:
    payload = json.dumps([FIGURE_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha")


def is_current(path: Path, digest: str) -> bool:
    """True when `path` exists and was drawn from inputs with this digest."""
    marker = _digest_path(path)
    return path.is_file() and marker.is_file() and marker.read_text().strip() == digest


def draw_if_changed(path: Path, digest: str, drawing: str, *args: object) -> bool:
    """Call figures.<drawing>(*args, path) unless the figure is current; returns whether it was drawn."""
    if is_current(path, digest):
        return False
    from monkeyreport import figures

    getattr(figures, drawing)(*args, path)
    write_text(_digest_path(path), digest + "\n")
    return True
