"""A quiet, informative console: result lines on stdout, a progress line only on a terminal,
Lightning's own output in runs/<experiment>/train.log."""

from __future__ import annotations

import fcntl
import logging
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import warnings
from pathlib import Path

import pytest
from lightning.fabric.utilities.warnings import PossibleUserWarning

from monkeyreport.console import fit_parts, lightning_output_to
from monkeyreport.pipeline import STAGE_NAMES

from conftest import make_dataset
from test_training import VANILLA, write_config

MONKEYREPORT = str(Path(sys.executable).parent / "monkeyreport")
BANNERS = ("GPU available", "TPU available", "Checkpoint directory", "LOCAL_RANK", "You are using a CUDA device")
# What a build prints: a line per stage, a line per experiment.
RESULT_LINE = re.compile(rf"({'|'.join(STAGE_NAMES)}) .*|train: vanilla: accuracy .*|build finished in .*")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run(*args: str) -> subprocess.CompletedProcess:
    """The command with stdout and stderr piped: not a terminal."""
    return subprocess.run([MONKEYREPORT, *args], capture_output=True, text=True, timeout=600)


def run_in_terminal(*args: str, columns: int = 80) -> str:
    """The command's output on a pseudo-terminal `columns` wide, as the user sees it written."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    process = subprocess.Popen([MONKEYREPORT, *args], stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the command exited and closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert process.wait(timeout=600) == 0
    return ANSI.sub("", b"".join(chunks).decode())


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict:
    """One build of one experiment, its output piped."""
    tmp = tmp_path_factory.mktemp("console")
    config = write_config(tmp, [VANILLA], make_dataset(tmp / "d", per_class=(6, 4)))
    done = run("build", "--config", str(config))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"config": config, "run": tmp / "runs" / "vanilla", "build": done}


def assert_only_result_lines(done: subprocess.CompletedProcess) -> None:
    lines = done.stdout.splitlines()
    assert [line for line in lines if not RESULT_LINE.fullmatch(line)] == [], done.stdout
    assert sum(line.startswith("train: vanilla: accuracy ") for line in lines) == 1
    for banner in BANNERS:
        assert banner not in done.stdout and banner not in done.stderr, banner


def test_piped_build_prints_result_lines_and_lightning_writes_to_the_log(project):
    assert_only_result_lines(project["build"])
    log = (project["run"] / "train.log").read_text()
    assert "GPU available" in log and "TPU available" in log and "vanilla: fresh start" in log


def test_quiet_resumed_build_prints_only_result_lines(project):
    (project["run"] / "metrics.json").unlink()  # an unfinished run: it resumes from its checkpoint
    done = run("build", "--config", str(project["config"]), "--quiet")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert_only_result_lines(done)
    assert done.stderr == ""
    log = (project["run"] / "train.log").read_text()
    assert "Checkpoint directory" in log and "Restored all states" in log
    assert log.count("GPU available") == 2  # appended: both attempts are there


def test_progress_line_only_on_a_terminal_and_not_with_quiet(project):
    config = str(project["config"])
    shown = run_in_terminal("train", "--config", config, "--force", "--epochs", "2")
    updates = [u for line in shown.split("\n") for u in line.split("\r") if u.strip()]
    progress = [u for u in updates if u.startswith("vanilla epoch ")]
    assert progress and all(len(u) <= 80 for u in updates[:-1]), updates  # no progress line wraps
    assert any(re.match(r"vanilla epoch 2/2 \d+/\d+ \S+ left loss \d\.\d{3} val_acc \d\.\d{3}", u)
               for u in progress), progress
    assert updates[-1].startswith("vanilla: accuracy ")  # the progress line was cleared before it

    quiet = run_in_terminal("train", "--config", config, "--force", "--quiet")
    assert [line.split(":")[0] for line in quiet.splitlines()] == ["vanilla"]


def test_progress_parts_fit_the_width():
    parts = ["efficientnet_lite0_finetuned", "epoch 2/5", "175/850", "01:23 left", "loss 1.132",
             "val_acc 0.333"]
    assert fit_parts(parts, 80) == "efficientnet_lite0_finetuned epoch 2/5 175/850 01:23 left loss 1.132"
    assert fit_parts(parts, 200) == " ".join(parts)
    assert fit_parts(parts, 10) == "efficientn"


def test_lightning_advice_goes_to_the_log_and_real_warnings_still_show(tmp_path, capsys):
    log = tmp_path / "train.log"
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with lightning_output_to(log):
            logging.getLogger("lightning.pytorch.utilities.rank_zero").info("GPU available: False, used: False")
            warnings.warn("Checkpoint directory /runs/x/checkpoints exists and is not empty.")
            warnings.warn("The 'train_dataloader' does not have many workers", PossibleUserWarning)
            warnings.warn("the loss is NaN")
    err = capsys.readouterr().err
    assert "UserWarning: the loss is NaN" in err
    for advice in ("GPU available", "Checkpoint directory", "many workers"):
        assert advice not in err
    text = log.read_text()
    for line in ("GPU available", "Checkpoint directory", "many workers", "the loss is NaN"):
        assert line in text
