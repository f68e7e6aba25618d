"""Who may use a runs folder at once: workers of one config together, a second config waits
or refuses, and a killed worker frees the folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monkeyreport.errors import MonkeyReportError
from monkeyreport.lock import for_config

HOLD = """
import sys, time
from pathlib import Path
from monkeyreport.lock import for_config
with for_config(Path(sys.argv[1]), sys.argv[2]):
    print("holding", flush=True)
    time.sleep(float(sys.argv[3]))
print("released", flush=True)
"""


def hold(folder: Path, seconds: float, key: str = "other") -> subprocess.Popen:
    """Another process working in `folder` for config `key`; returns once it does."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), key, str(seconds)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "holding"
    return process


def test_another_config_refuses_naming_the_first_worker(tmp_path):
    first = hold(tmp_path, 30)
    try:
        with pytest.raises(MonkeyReportError) as refused:
            with for_config(tmp_path, "mine", wait=False):
                pass
        message = str(refused.value)
        assert f"monkeyreport process {first.pid}" in message and str(tmp_path) in message
        assert "\n" not in message
    finally:
        first.kill()
        first.wait()


def test_workers_of_one_config_share_the_folder(tmp_path):
    first = hold(tmp_path, 30, key="same")
    try:
        said: list[str] = []
        start = time.perf_counter()
        with for_config(tmp_path, "same", wait=False, echo=said.append):
            assert first.poll() is None  # both work at once
        assert said == [] and time.perf_counter() - start < 10
    finally:
        first.kill()
        first.wait()


def test_another_config_waits_for_the_first_and_says_so(tmp_path):
    first = hold(tmp_path, 1.5)
    said: list[str] = []
    start = time.perf_counter()
    with for_config(tmp_path, "mine", wait=True, echo=said.append):
        assert first.stdout.readline().strip() == "released"  # we went on after the first one
    assert time.perf_counter() - start > 0.5
    first.wait()
    assert said[0].startswith(f"waiting for monkeyreport process {first.pid}")
    assert not list(tmp_path.glob(".monkeyreport.mine.*"))  # nothing left behind


def test_lock_of_a_killed_worker_does_not_block(tmp_path):
    first = hold(tmp_path, 60)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert list(tmp_path.glob(".monkeyreport.other.*.json"))  # it left its note behind, but not the lock
    said: list[str] = []
    with for_config(tmp_path, "mine", wait=False, echo=said.append):
        pass
    assert said == []
    assert not list(tmp_path.glob(".monkeyreport.other.*"))  # the dead worker's files are cleared


def test_build_and_train_refuse_with_no_wait_and_keep_everything(tmp_path):
    from typer.testing import CliRunner

    from monkeyreport.cli import app

    runs = tmp_path / "runs"
    (runs / "vanilla").mkdir(parents=True)
    (runs / "vanilla" / "metrics.json").write_text("{}")  # a finished result stays untouched
    config = tmp_path / "c.toml"
    config.write_text(f"[output]\nreport_dir = '{tmp_path / 'report'}'\nruns_dir = '{runs}'\n"
                      "[[experiments]]\nname = 'vanilla'\narchitecture = 'vanilla_cnn'\n")
    first = hold(runs, 30)  # a worker of another config
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
