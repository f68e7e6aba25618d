"""`make bench-features`: the frozen rows of a profile with one feature pass per run (as
before issue #21) against one shared pass (the feature cache, feature_cache.py).

Before: each seed of each frozen experiment is trained alone in its own runs folder, so
each run computes the backbone's features itself. After: all seeds are trained by one
`monkeyreport train` in one runs folder, so the first run computes the features and the
others read them. Both start from the same warm caches of decoded images and fast-path
measurements (built first, untimed, without features), so the wall times compare the
feature passes and the head training alone. The feature passes are counted on the cache
(files under runs/cache/features), not on time. Results go to stdout and
benchmarks/features.md.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
import tomllib
from datetime import datetime, timezone
from pathlib import Path

from bench import machine
from monkeyreport.results import CacheFiles, RunMetrics

REPO = Path(__file__).resolve().parents[1]
MONKEYREPORT = str(Path(sys.executable).parent / "monkeyreport")


def write_config(source: Path, out: Path, runs: str, seeds: list[int]) -> Path:
    """`source` with its own runs and report folders under `out` and the given seeds."""
    text = source.read_text()
    text = re.sub(r"(?m)^seeds = .*$", f"seeds = {seeds}", text)
    text = re.sub(r'(?m)^runs_dir = .*$', f'runs_dir = "{out.resolve() / runs}"', text)
    text = re.sub(r'(?m)^report_dir = .*$', f'report_dir = "{out.resolve() / runs}-report"', text)
    path = out / f"{runs}.toml"
    path.write_text(text)
    return path


def train(config: Path, experiments: list[str], data_dir: Path, *extra: str) -> float:
    """Wall seconds of `monkeyreport train` for the given experiments."""
    only = [arg for name in experiments for arg in ("--only", name)]
    start = time.perf_counter()
    done = subprocess.run([MONKEYREPORT, "train", "--config", str(config), "--data-dir", str(data_dir), "--quiet",
                           *only, *extra], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"train failed:\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - start


def warm_cache(out: Path, folder: str) -> None:
    """The warm folder's image cache and fast-path measurements, without its features."""
    shutil.copytree(out / "warm" / "cache", out / folder / "cache", ignore=shutil.ignore_patterns("features"))


def passes(runs_dir: Path) -> int:
    return len(list(CacheFiles(runs_dir).features.glob("*.pt")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "study.toml")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "datasets" / "monkeys")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-features")
    args = parser.parse_args()
    profile = tomllib.loads(args.config.read_text())
    seeds = profile.get("seeds", [profile.get("seed", 42)])
    frozen = [e["name"] for e in profile["experiments"] if e.get("frozen")]
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    train(write_config(args.config, args.out, "warm", seeds[:1]), frozen, args.data_dir, "--epochs", "1")

    before_seconds, before_passes = 0.0, 0
    for seed in seeds:
        folder = f"alone-{seed}"
        warm_cache(args.out, folder)
        before_seconds += train(write_config(args.config, args.out, folder, [seed]), frozen, args.data_dir)
        before_passes += passes(args.out / folder)
    warm_cache(args.out, "shared")
    after_seconds = train(write_config(args.config, args.out, "shared", seeds), frozen, args.data_dir)
    after_passes = passes(args.out / "shared")

    rows = []
    for name in frozen:
        for seed in seeds:
            run = name if len(seeds) == 1 else f"{name}-seed{seed}"
            alone = RunMetrics.read(args.out / f"alone-{seed}" / name / "metrics.json")  # one seed: no suffix
            shared = RunMetrics.read(args.out / "shared" / run / "metrics.json")
            rows.append(f"| {run} | {alone.accuracy:.4f} | {shared.accuracy:.4f} |")
    runs = len(frozen) * len(seeds)
    report = "\n".join([
        "# Frozen rows: a feature pass per run against one shared pass (`make bench-features`)", "",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {machine()}; `{args.config.relative_to(REPO)}`, "
        f"frozen experiments {', '.join(frozen)} × seeds {seeds} = {runs} runs, full dataset.", "",
        "| | feature passes (files in runs/cache/features) | wall s of the frozen runs | against before |",
        "|---|---|---|---|",
        f"| before: each run alone | {before_passes} | {before_seconds:.1f} | 1.00 |",
        f"| after: one runs folder, shared features | {after_passes} | {after_seconds:.1f} | "
        f"{after_seconds / before_seconds:.2f} |", "",
        "| run | accuracy, alone | accuracy, shared features |", "|---|---|---|", *rows, ""])
    print(report)
    (REPO / "benchmarks" / "features.md").write_text(report)


if __name__ == "__main__":
    main()
