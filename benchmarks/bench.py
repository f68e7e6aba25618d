"""`make bench`: fp32 runs, CPU fast-path runs and the plain step loop, per experiment.

It shows what the CPU fast path gains and how close it comes to the plain step loop. For
every selected experiment (random weights: `pretrained = "none"`, since ImageNet weights
cannot be downloaded offline and do not change the compute) it times:

- fp32: a run in the default layout, without autocast (`precision = "32-true"`,
  `memory_format = "contiguous"`), the setting every run had before the fast path;
- fast path: a run with `precision = "auto"`, `memory_format = "auto"`. Its measurement
  (`placement.compute_setting`) is made and cached first and timed on its own ("measuring"),
  so the timed run is what every later run of the same architecture on this machine costs;
- plain loop: the same arithmetic without Lightning, data or metrics, from
  `fast_path.seconds_per_step` on random tensors, in each of the four settings
  (contiguous or channels-last × fp32 or bf16 autocast); the lowest estimate is kept. It is
  the floor the fast path is held to: fast/plain loop <= 1.15 for fine-tuned experiments.

Fine-tuned experiments are compared on time per epoch (the mean of history.csv `seconds`,
training + validation; the plain loop: training steps over the training images plus eval
forwards over the validation images), frozen ones on the run's total time (the plain loop:
one backbone forward over training + validation images). All runs read one image cache,
built before the first timed run, so no run pays for decoding the JPEGs. Results go to
stdout, a row as soon as it is known, and to benchmarks/results.md.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from monkeyreport import fast_path, results
from monkeyreport.results import CacheFiles
from monkeyreport.architectures import IMAGENET_MEAN, IMAGENET_STD
from monkeyreport.config import Config, ExperimentConfig, data_dir_override, load_config, resolve_data_root
from monkeyreport.data import DatasetLayout, ImageRecord, fingerprint, list_files, locate, scan
from monkeyreport.datamodule import MonkeyDataModule, Preprocessing, select_samples
from monkeyreport.models import create
from monkeyreport.placement import compute_setting, resolve_placement
from monkeyreport.training import run_experiment, select_experiments

LAYOUTS = ("contiguous", "channels_last")
PRECISIONS = (fast_path.FP32, fast_path.BF16)
COLUMNS = ("experiment", "frozen", "epochs", "measure", "fp32 s", "fast s", "fp32/fast", "fast setting",
           "measuring s", "plain loop s", "plain loop setting", "fast/plain loop", "accuracy fp32 / fast")


@dataclass(frozen=True)
class Dataset:
    """What every run reads: the layout, the scanned images and their fingerprint."""

    layout: DatasetLayout
    records: list[ImageRecord]
    fingerprint: str


@dataclass(frozen=True)
class Run:
    """One timed run: `seconds` per epoch (fine-tuned) or in total (frozen)."""

    seconds: float
    accuracy: float
    setting: str  # "channels-last bf16-mixed"
    n_train: int
    n_val: int
    device: str


@dataclass(frozen=True)
class Row:
    experiment: ExperimentConfig
    epochs: int
    fp32: Run
    fast: Run
    measuring: float  # seconds of the fast path's measurement, before the fast run
    loop_estimates: dict[str, float]  # plain step loop seconds per setting, same work as the runs

    @property
    def loop_setting(self) -> str:
        return min(self.loop_estimates, key=self.loop_estimates.__getitem__)

    @property
    def loop(self) -> float:
        return self.loop_estimates[self.loop_setting]

    def cells(self) -> list[str]:
        return [self.experiment.name, "yes" if self.experiment.frozen else "no", str(self.epochs),
                "total" if self.experiment.frozen else "per epoch",
                _seconds(self.fp32.seconds), _seconds(self.fast.seconds),
                f"{self.fp32.seconds / self.fast.seconds:.2f}",
                self.fast.setting, _seconds(self.measuring), _seconds(self.loop), self.loop_setting,
                f"{self.fast.seconds / self.loop:.2f}", f"{self.fp32.accuracy:.4f} / {self.fast.accuracy:.4f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/monkeyreport.toml"))
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--only", action="append", help="an experiment to run (repeatable; default: all)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of every run (default: 1)")
    parser.add_argument("--loop-steps", type=int, default=3,
                        help="timed steps per plain-loop measurement, after one warm-up (default: 3)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.md"))
    args = parser.parse_args()

    config = load_config(args.config).with_overrides(data_dir=data_dir_override(args.data_dir))
    configured_epochs = config.training.epochs
    experiments = [dataclasses.replace(e, pretrained="none") for e in select_experiments(config, args.only)]
    data = load_dataset(config)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="monkeyreport-bench-") as tmp:
        config = with_section(config, "output", runs_dir=str(Path(tmp) / "runs"))
        config = with_section(config, "training", epochs=args.epochs)
        cache_seconds = build_image_cache(config, data)
        print(f"image cache built in {_seconds(cache_seconds)} s", flush=True)
        print(*_table_head(), sep="\n", flush=True)
        for experiment in experiments:
            rows.append(bench_experiment(config, experiment, data, args.loop_steps))
            print(_format_row(rows[-1]), flush=True)
    summary = _summary(rows, configured_epochs)
    print(*summary, sep="\n", flush=True)
    results.write_text(args.out, with_kept_notes(_markdown(config, args, rows, summary), args.out))
    print(f"wrote {args.out}", flush=True)


def load_dataset(config: Config) -> Dataset:
    """The configured dataset, located and scanned once for every run."""
    layout = locate(resolve_data_root(config))
    entries = list_files(layout)
    return Dataset(layout, scan(layout, entries, config.data.max_image_pixels, config.eda.workers),
                   fingerprint(layout, entries))


def with_section(config: Config, section: str, **changes: object) -> Config:
    """`config` with fields of one section (`training`, `trainer`, `output`) changed."""
    return dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **changes)})


def build_image_cache(config: Config, data: Dataset) -> float:
    """Decode the images into the runs' shared cache (what the first run would otherwise do
    inside its timing); its seconds. Normalisation statistics are not part of the cache."""
    t = config.training
    if not t.image_cache:
        return 0.0
    start = time.perf_counter()
    MonkeyDataModule(
        select_samples(data.layout, data.records, "training", t.max_images_per_class, config.seed),
        select_samples(data.layout, data.records, "validation", t.max_images_per_class, config.seed),
        Preprocessing(t.resize, t.crop, IMAGENET_MEAN, IMAGENET_STD), t.batch_size, t.num_workers,
        config.data.max_image_pixels, cache_dir=CacheFiles(config.runs_dir).folder, dataset_fingerprint=data.fingerprint,
        seed=config.seed,
    ).prepare_data()
    return time.perf_counter() - start


def bench_experiment(config: Config, experiment: ExperimentConfig, data: Dataset, loop_steps: int) -> Row:
    """The fp32 run, the fast path's measurement and run, and the plain loop of one experiment."""
    fp32 = timed_run(with_section(config, "trainer", precision=fast_path.FP32, memory_format="contiguous"),
                     experiment, data)
    fast_config = with_section(config, "trainer", precision=fast_path.AUTO, memory_format=fast_path.AUTO)
    start = time.perf_counter()
    compute_setting(fast_config, experiment, len(data.layout.classes), resolve_placement(fast_config))
    measuring = time.perf_counter() - start
    fast = timed_run(fast_config, experiment, data)
    estimates = plain_loop(config, experiment, len(data.layout.classes), fp32.n_train, fp32.n_val,
                                    loop_steps)
    return Row(experiment, config.training.epochs, fp32, fast, measuring, estimates)


def timed_run(config: Config, experiment: ExperimentConfig, data: Dataset) -> Run:
    """A fresh run of `experiment`, timed per epoch (fine-tuned) or in total (frozen)."""
    start = time.perf_counter()
    outcome = run_experiment(config, experiment, data.layout, data.records, data.fingerprint, force=True)
    total = time.perf_counter() - start
    m = outcome.metrics
    compute = m["compute"]
    seconds = total if experiment.frozen else statistics.fmean(_epoch_seconds(outcome.run_dir / "history.csv"))
    return Run(seconds, m["accuracy"], fast_path.setting_name(compute["memory_format"], compute["precision"]),
               m["n_train"], m["n_val"], m["device"])


def _epoch_seconds(history: Path) -> list[float]:
    with history.open() as f:
        return [float(row["seconds"]) for row in csv.DictReader(f)]


def plain_loop(config: Config, experiment: ExperimentConfig, num_classes: int, n_train: int, n_val: int,
               steps: int) -> dict[str, float]:
    """The plain step loop's estimated seconds in each of the four settings, by name."""
    return {fast_path.setting_name(layout, precision):
            loop_estimate(config, experiment, num_classes, n_train, n_val, layout, precision, steps)
            for layout in LAYOUTS for precision in PRECISIONS}


def loop_estimate(config: Config, experiment: ExperimentConfig, num_classes: int, n_train: int, n_val: int,
                  memory_format: str, precision: str, steps: int) -> float:
    """Seconds of the runs' measured work in the plain step loop, in one setting: per epoch
    (fine-tuned: training steps, then eval forwards over validation) or in total (frozen: one
    backbone forward over every image). A fresh model each time: the measurement changes it."""
    t = config.training
    model = create(experiment.architecture, num_classes, "none", experiment.frozen).model

    def per_step(module: torch.nn.Module, kind: fast_path.Pass) -> float:
        return fast_path.seconds_per_step(module, kind, t.batch_size, t.crop, num_classes, precision,
                                          channels_last=memory_format == "channels_last", steps=steps)

    if experiment.frozen:
        return (n_train + n_val) / t.batch_size * per_step(model.backbone, "features")
    training, evaluation = per_step(model, "training"), per_step(model, "features")
    return (n_train * training + n_val * evaluation) / t.batch_size


def _seconds(x: float) -> str:
    """Three significant digits, at most three decimals: "1234", "125", "8.21", "0.083"."""
    decimals = min(3, max(0, 2 - math.floor(math.log10(x)))) if x > 0 else 3
    return f"{x:.{decimals}f}"


def _format_row(row: Row) -> str:
    return f"| {' | '.join(row.cells())} |"


def _table_head() -> list[str]:
    return [f"| {' | '.join(COLUMNS)} |", "|" + "---|" * len(COLUMNS)]


def _summary(rows: list[Row], configured_epochs: int) -> list[str]:
    """Totals of the measured work and the projected training time of a build."""
    def total(pick: str) -> float:
        return sum(getattr(r, pick).seconds for r in rows)

    def projected(pick: str) -> float:
        return sum(getattr(r, pick).seconds * (1 if r.experiment.frozen else configured_epochs) for r in rows)

    fp32, fast = total("fp32"), total("fast")
    fp32_build, fast_build = projected("fp32"), projected("fast")
    return [
        f"- Totals of the measured work: fp32 {fp32:.1f} s, fast path {fast:.1f} s"
        + (f" (fp32/fast {fp32 / fast:.2f})" if fast else ""),
        f"- Projected training time of a build of these experiments at the config's {configured_epochs} "
        f"epochs (fine-tuned per epoch × {configured_epochs} + frozen totals; a projection, excluding "
        f"EDA, scan and render): fp32 {fp32_build:.0f} s ({fp32_build / 60:.1f} min), "
        f"fast path {fast_build:.0f} s ({fast_build / 60:.1f} min)",
    ]


def machine() -> str:
    """This machine in one line, as the benchmark files head their tables with it."""
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return (f"{fast_path.cpu_model()} ({platform.machine()}), {os.cpu_count()} CPU cores{gpu}; "
            f"Python {platform.python_version()}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads); native bf16: {'yes' if fast_path.bf16_is_native() else 'no'}")


def _markdown(config: Config, args: argparse.Namespace, rows: list[Row], summary: list[str]) -> str:
    t = config.training
    lines = [
        "# Benchmark: fp32, the CPU fast path and the plain step loop",
        "",
        f"- Date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"- Machine: {machine()}",
        f"- Config: `{args.config}` with random weights; crop {t.crop}, batch {t.batch_size}, "
        f"{t.epochs} epoch(s) per run; device used: {rows[0].fast.device if rows else '-'}",
        f"- Command: `{shlex.join(['python', 'benchmarks/bench.py', *sys.argv[1:]])}`",
        "",
        "Times in seconds. Frozen experiments: total time of the run; fine-tuned: mean time per",
        "epoch (training + validation). fp32: contiguous layout, no autocast; fast: `precision` and",
        "`memory_format` \"auto\", measured beforehand (measuring s); plain loop: the same work as a",
        "plain PyTorch step loop on random tensors, in the fastest of its four settings. Target:",
        "fine-tuned fast/plain loop <= 1.15.",
        "",
        *_table_head(),
        *(_format_row(r) for r in rows),
        "",
        *summary,
        "",
        "The plain step loop in each setting (seconds, same work as above):",
        "",
        *_settings_table(rows),
        "",
    ]
    return "\n".join(lines)


KEPT = "<!-- Below this line: notes kept when the benchmark rewrites the table above. -->"


def with_kept_notes(table: str, path: Path) -> str:
    """The new table, followed by the notes of the file it replaces (build timings and the
    like, measured by hand), which follow the KEPT line."""
    old = path.read_text() if path.is_file() else ""
    notes = old.partition(KEPT)[2].lstrip("\n")
    return f"{table}\n{KEPT}\n\n{notes}" if notes else table


def _settings_table(rows: list[Row]) -> list[str]:
    names = [fast_path.setting_name(layout, precision) for layout in LAYOUTS for precision in PRECISIONS]
    return [f"| experiment | {' | '.join(names)} |", "|---|" + "---|" * len(names),
            *(f"| {r.experiment.name} | {' | '.join(_seconds(r.loop_estimates[n]) for n in names)} |" for r in rows)]


if __name__ == "__main__":
    main()
