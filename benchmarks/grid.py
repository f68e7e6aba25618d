"""`make bench-grid`: one worker against two on the same grid of frozen and fine-tuned runs.

The grid is the offline profile's three experiments (the Vanilla CNN from scratch,
EfficientNet-Lite0 frozen and fine-tuned from its packaged weights) with two seeds, on a
subset of the real dataset: six runs. It is trained from nothing twice, into two runs
folders: `monkeyreport train --jobs 1` (one worker with every core) and `--jobs 2` (two
workers with half the cores each; work_queue.py). Both start with the same warm caches
(the decoded images and the fast path's measurements are built first, untimed; the frozen
runs' features are not copied, so each grid computes them once), so the two wall times
compare the training alone. Results go to stdout and benchmarks/grid.md: both
wall times, their ratio, which worker trained which run, and each run's accuracy in both.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bench import machine
from monkeyreport.results import RunMetrics

REPO = Path(__file__).resolve().parents[1]
MONKEYREPORT = str(Path(sys.executable).parent / "monkeyreport")
GRID = """
seeds = [1, 2]
[data]
root = "{data}"
[output]
report_dir = "{out}/report"
runs_dir = "{out}/{runs}"
[training]
epochs = {epochs}
batch_size = 32
max_images_per_class = {per_class}
resize = 146
crop = 128
num_workers = 2
[[experiments]]
name = "vanilla_cnn"
title = "VanillaCNN"
architecture = "vanilla_cnn"
pretrained = "none"
[[experiments]]
name = "lite0_frozen"
title = "EfficientNet-Lite0"
architecture = "efficientnet_lite0"
frozen = true
pretrained = "packaged"
[[experiments]]
name = "lite0_finetuned"
title = "EfficientNet-Lite0"
architecture = "efficientnet_lite0"
pretrained = "packaged"
"""


def write_config(out: Path, runs: str, args: argparse.Namespace) -> Path:
    path = out / f"{runs}.toml"
    path.write_text(GRID.format(data=args.data_dir.resolve(), out=out.resolve(), runs=runs, epochs=args.epochs,
                                per_class=args.per_class))
    return path


def train(config: Path, jobs: int) -> tuple[float, str]:
    """Wall seconds and output of `monkeyreport train --jobs N`."""
    start = time.perf_counter()
    done = subprocess.run([MONKEYREPORT, "train", "--config", str(config), "--quiet", "--jobs", str(jobs)],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"train --jobs {jobs} failed:\n{done.stdout}\n{done.stderr}")
    return seconds, done.stdout


def trained_by(output: str) -> dict[str, str]:
    """Which worker trained which run, from the `[worker i] run: accuracy ... (N epochs in` lines."""
    return {run: worker for worker, run in
            re.findall(r"^\[worker (\d+)\] (\S+): accuracy [\d.]+, macro F1 [\d.]+ \(\d+ epochs in", output, re.M)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "datasets" / "monkeys")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-grid")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--per-class", type=int, default=40, help="training images per class")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    warm = write_config(args.out, "warm", args)
    subprocess.run([MONKEYREPORT, "train", "--config", str(warm), "--quiet", "--epochs", "1"], check=True,
                   capture_output=True)  # decoded images and fast-path measurements, untimed
    for runs in ("one", "two"):
        (args.out / runs).mkdir()
        # Without the warm run's features: both grids compute the frozen runs' feature pass.
        shutil.copytree(args.out / "warm" / "cache", args.out / runs / "cache", ignore=shutil.ignore_patterns("features"))
    one_seconds, _ = train(write_config(args.out, "one", args), 1)
    two_seconds, two_output = train(write_config(args.out, "two", args), 2)
    by_worker = trained_by(two_output)
    rows = []
    for run in sorted(by_worker):
        one, two = (RunMetrics.read(args.out / folder / run / "metrics.json") for folder in ("one", "two"))
        rows.append(f"| {run} | {by_worker[run]} | {one.accuracy:.4f} | {two.accuracy:.4f} |")
    report = "\n".join([
        "# One worker against two on one grid (`make bench-grid`)", "",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {machine()}; six runs (three experiments × two "
        f"seeds), {args.epochs} epochs, {args.per_class} training images per class, 128 px crops.", "",
        "| workers | wall s | against one |", "|---|---|---|",
        f"| 1 (`--jobs 1`, every core) | {one_seconds:.1f} | 1.00 |",
        f"| 2 (`--jobs 2`, half the cores each) | {two_seconds:.1f} | {two_seconds / one_seconds:.2f} |", "",
        "| run | trained by worker | accuracy, one worker | accuracy, two workers |", "|---|---|---|---|",
        *rows, ""])
    print(report)
    (REPO / "benchmarks" / "grid.md").write_text(report)


if __name__ == "__main__":
    main()
