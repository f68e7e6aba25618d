"""One build at a time per runs folder: a second one waits or refuses; a killed one frees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monkeyreport.errors import MonkeyReportError
from monkeyreport.lock import HOLDER_NAME, exclusive

HOLD = """
import sys, time
from pathlib import Path
from monkeyreport.lock import exclusive
with exclusive(Path(sys.argv[1])):
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
print("released", flush=True)
"""


def hold(folder: Path, seconds: float) -> subprocess.Popen:
    """Another process holding the lock of `folder`; returns once it holds it."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(seconds)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "holding"
    return process


def test_second_build_refuses_naming_the_first_one(tmp_path):
    first = hold(tmp_path, 30)
    try:
        with pytest.raises(MonkeyReportError) as refused:
            with exclusive(tmp_path, wait=False):
                pass
        message = str(refused.value)
        assert f"monkeyreport process {first.pid}" in message and str(tmp_path) in message
        assert "\n" not in message
    finally:
        first.kill()
        first.wait()


def test_second_build_waits_for_the_first_and_says_so(tmp_path):
    first = hold(tmp_path, 1.5)
    said: list[str] = []
    start = time.perf_counter()
    with exclusive(tmp_path, wait=True, echo=said.append):
        assert first.stdout.readline().strip() == "released"  # we went on after the first one
        assert (tmp_path / HOLDER_NAME).is_file()
    assert time.perf_counter() - start > 0.5
    first.wait()
    assert said[0].startswith(f"waiting for monkeyreport process {first.pid}")
    assert not (tmp_path / HOLDER_NAME).exists()


def test_lock_of_a_killed_process_does_not_block(tmp_path):
    first = hold(tmp_path, 60)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert (tmp_path / HOLDER_NAME).is_file()  # it left its note behind, but not the lock
    said: list[str] = []
    with exclusive(tmp_path, wait=False, echo=said.append):
        pass
    assert said == []


def test_build_and_train_refuse_with_no_wait_and_keep_everything(tmp_path):
    from typer.testing import CliRunner

    from monkeyreport.cli import app

    runs = tmp_path / "runs"
    (runs / "vanilla").mkdir(parents=True)
    (runs / "vanilla" / "metrics.json").write_text("{}")  # a finished result stays untouched
    config = tmp_path / "c.toml"
    config.write_text(f"[output]\nreport_dir = '{tmp_path / 'report'}'\nruns_dir = '{runs}'\n"
                      "[[experiments]]\nname = 'vanilla'\narchitecture = 'vanilla_cnn'\n")
    first = hold(runs, 30)
    try:
        for command in ("build", "train"):
            result = CliRunner().invoke(app, [command, "--config", str(config), "--no-wait"])
            assert result.exit_code == 1, result.output
            assert result.output.strip().splitlines() == [
                f"error: {runs}: in use by monkeyreport process {first.pid} "
                + result.output.split(f"process {first.pid} ", 1)[1].strip()]
        assert (runs / "vanilla" / "metrics.json").read_text() == "{}"
        assert not (tmp_path / "report").exists()
    finally:
        first.kill()
        first.wait()
