"""The runs folder as a work queue: several workers share a grid of runs, each run trained
once; a killed worker's run is taken over and resumed; a build that sees runs held by
another worker leaves the report to the worker that finishes last."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

from monkeyreport import pipeline
from monkeyreport.config import load_config
from monkeyreport.results import RunMetrics
from monkeyreport.work_queue import CLAIMS

from conftest import make_dataset, wait_for_file

GRID = """
seeds = [1, 2]
[data]
root = "{data}"
[output]
report_dir = "{root}/report"
runs_dir = "{root}/{runs}"
[eda]
samples_per_class = 1
workers = 1
[training]
epochs = {epochs}
batch_size = 4
resize = 36
crop = 32
num_workers = 0
[trainer]
accelerator = "cpu"
devices = 1
precision = "32-true"
memory_format = "contiguous"  # not measured: each runs folder would measure for itself
[[experiments]]
name = "fast"
title = "VanillaCNN"
architecture = "vanilla_cnn"
[[experiments]]
name = "slow"
title = "VanillaCNN lenta"
architecture = "vanilla_cnn"
learning_rate = 0.0001
"""
RUNS = ["fast-seed1", "fast-seed2", "slow-seed1", "slow-seed2"]
MONKEYREPORT = str(Path(sys.executable).parent / "monkeyreport")


def grid(tmp_path: Path, data: Path, runs: str = "runs", epochs: int = 2) -> Path:
    path = tmp_path / f"{runs}.toml"
    path.write_text(GRID.format(data=data, root=tmp_path, runs=runs, epochs=epochs))
    return path


def trained(output: str) -> list[str]:
    """The runs a command's output says it trained (not reused)."""
    return re.findall(r"(\S+): accuracy [\d.]+, macro F1 [\d.]+ \(\d+ epochs in", output)


def probabilities(run: Path) -> np.ndarray:
    with (run / "predictions.csv").open() as f:
        return np.array([[float(v) for k, v in row.items() if k.startswith("prob_")] for row in csv.DictReader(f)])


def test_two_workers_train_each_run_of_a_grid_once_with_the_results_of_one(tmp_path):
    data = make_dataset(tmp_path / "monkeys", per_class=(6, 3))
    two = subprocess.run([MONKEYREPORT, "train", "--config", str(grid(tmp_path, data)), "--jobs", "2"],
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stdout + two.stderr
    by_worker = {w: trained("\n".join(l for l in two.stdout.splitlines() if l.startswith(f"[worker {w}]")))
                 for w in (1, 2)}
    assert sorted(by_worker[1] + by_worker[2]) == RUNS  # every run trained, none twice
    assert by_worker[1] and by_worker[2]  # and both workers did some

    # One worker alone, computing as each of the two did (one core each: workers.py).
    one = subprocess.run([MONKEYREPORT, "train", "--config", str(grid(tmp_path, data, runs="one"))],
                         capture_output=True, text=True, timeout=600, env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert one.returncode == 0 and sorted(trained(one.stdout)) == RUNS
    for name in RUNS:
        shared, alone = RunMetrics.read(tmp_path / "runs" / name / "metrics.json"), \
            RunMetrics.read(tmp_path / "one" / name / "metrics.json")
        assert shared.confusion_matrix == alone.confusion_matrix
        assert np.allclose(probabilities(tmp_path / "runs" / name), probabilities(tmp_path / "one" / name),
                           atol=2e-6)  # the last printed digit


def test_a_killed_worker_leaves_the_others_going_and_its_run_resumes(tmp_path):
    data = make_dataset(tmp_path / "monkeys", per_class=(6, 3))
    config = str(grid(tmp_path, data, epochs=40))
    runs = tmp_path / "runs"
    first = subprocess.Popen([MONKEYREPORT, "train", "--config", config, "--quiet"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_file(runs / RUNS[0] / "checkpoints" / "last.ckpt", first)  # it holds the first run
    second = subprocess.Popen([MONKEYREPORT, "train", "--config", config, "--quiet"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_file(runs / RUNS[1] / "checkpoints" / "last.ckpt", second)  # it took the next one
    first.kill()  # SIGKILL, mid-run: no handler runs, the kernel frees its claim
    first.wait()
    assert not (runs / RUNS[0] / "metrics.json").exists()
    output, _ = second.communicate(timeout=600)
    assert second.returncode == 0, output
    assert sorted(trained(output)) == RUNS  # the three left, and the killed one taken over
    metrics = {name: RunMetrics.read(runs / name / "metrics.json") for name in RUNS}
    assert metrics[RUNS[0]].resumed and metrics[RUNS[0]].epochs == 40
    assert not any(metrics[name].resumed for name in RUNS[1:])
    with (runs / RUNS[0] / "history.csv").open() as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == list(range(1, 41))


def test_a_build_leaves_runs_held_elsewhere_and_the_last_worker_renders(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "monkeys", per_class=(4, 2))
    config = load_config(grid(tmp_path, data, epochs=1))
    monkeypatch.chdir(tmp_path)
    options = pipeline.Options(show_progress=False, fmt="html", echo=lambda _: None)
    (tmp_path / "runs" / CLAIMS).mkdir(parents=True)
    other_worker = FileLock(tmp_path / "runs" / CLAIMS / f"{RUNS[3]}.lock")
    other_worker.acquire()  # another worker is training the last run
    first = pipeline.run(config, options)
    assert first.stopped and first.ran == ["eda", "train"]
    assert f"1 held by other workers ({RUNS[3]})" in first.lines[-1]
    assert not (tmp_path / "report" / "report.html").exists()
    assert [n for n in RUNS if (tmp_path / "runs" / n / "metrics.json").exists()] == RUNS[:3]

    other_worker.release()  # it died before finishing: the next build trains and renders
    last = pipeline.run(config, options)
    assert not last.stopped and "render" in last.ran
    assert (tmp_path / "report" / "report.html").is_file()
    assert all((tmp_path / "runs" / n / "metrics.json").exists() for n in RUNS)


def test_workers_of_another_config_wait_for_the_runs_folder(tmp_path):
    """Two configs on one runs folder would overwrite each other: the second one waits."""
    data = make_dataset(tmp_path / "monkeys", per_class=(4, 2))
    first = subprocess.Popen([MONKEYREPORT, "train", "--config", str(grid(tmp_path, data, epochs=40)), "--quiet"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_file(tmp_path / "runs" / RUNS[0] / "checkpoints" / "last.ckpt", first)
        other = grid(tmp_path, data, epochs=3)
        other.rename(tmp_path / "other.toml")
        refused = subprocess.run([MONKEYREPORT, "train", "--config", str(tmp_path / "other.toml"), "--no-wait"],
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode == 1 and f"process {first.pid}" in refused.stderr
    finally:
        first.kill()
        first.wait()
