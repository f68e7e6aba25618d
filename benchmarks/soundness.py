"""`make soundness`: does the CPU fast path train models as good as the fp32 path?

One run with one seed cannot say: a network trained from scratch ends at a different model
when only the order of its floating-point sums changes (channels-last does that), just as
it does with another seed. So every selected experiment is trained with several seeds, each
seed in every variant, with the same seed giving the same initial weights and data order:

- fp32: `precision = "32-true"`, `memory_format = "contiguous"`, the path before the fast
  path (the reference);
- fast: `precision` and `memory_format` "auto", what this machine's fast path picks;
- bf16: bf16 autocast on channels-last, what a CPU with fast bf16 (AMX) picks; a variant
  only where this CPU has bf16 instructions.

Per seed: validation accuracy of each variant, its difference to fp32 in points and the
exact McNemar test on the images one of the two gets right and the other wrong. Per
variant: mean accuracy and its spread over seeds, and the mean paired difference to fp32
with a 95 % t-interval. The fast path is sound when that mean difference is within 2
points; the spread of fp32 over seeds is the yardstick for one seed's difference. Results go
to stdout, a row as soon as it is known, and to benchmarks/soundness.md (notes below the
marker line are kept).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import statistics
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from scipy import stats as scipy_stats

from bench import Dataset, build_image_cache, load_dataset, machine, with_kept_notes, with_section
from monkeyreport import fast_path, results
from monkeyreport.config import Config, ExperimentConfig, data_dir_override, load_config
from monkeyreport.results import Predictions
from monkeyreport.stats import McNemar, mcnemar
from monkeyreport.training import run_experiment, select_experiments

# variant name -> ([trainer] precision, [trainer] memory_format); the first is the reference.
VARIANTS = {"fp32": (fast_path.FP32, "contiguous"), "fast": (fast_path.AUTO, fast_path.AUTO),
            "bf16": (fast_path.BF16, "channels_last")}
REFERENCE = "fp32"
BAND_POINTS = 2.0


@dataclass(frozen=True)
class Outcome:
    """One finished run: its accuracy, the setting it computed in and, per validation image
    (in predictions.csv order), whether it was classified right."""

    accuracy: float
    setting: str
    right: np.ndarray

    @classmethod
    def of(cls, metrics: dict, predictions: Predictions) -> "Outcome":
        compute = metrics["compute"]
        return cls(metrics["accuracy"], fast_path.setting_name(compute["memory_format"], compute["precision"]),
                   predictions.true == predictions.predicted)


@dataclass(frozen=True)
class SeedRow:
    """Every variant of one experiment trained with one seed."""

    seed: int
    outcomes: dict[str, Outcome]

    def points(self, variant: str) -> float:
        """The variant's accuracy minus the reference's, in percentage points."""
        return 100 * (self.outcomes[variant].accuracy - self.outcomes[REFERENCE].accuracy)

    def test(self, variant: str) -> McNemar:
        return mcnemar(REFERENCE, variant, self.outcomes[REFERENCE].right, self.outcomes[variant].right)

    def cells(self, variants: list[str]) -> list[str]:
        cells = [str(self.seed), f"{self.outcomes[REFERENCE].accuracy:.4f}"]
        for v in variants[1:]:
            t = self.test(v)
            cells += [f"{self.outcomes[v].accuracy:.4f}", f"{self.points(v):+.1f}",
                      f"{t.only_a_right} / {t.only_b_right}, p = {t.p_value:.2f}"]
        return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/offline.toml"))
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--only", action="append", help="an experiment to run (repeatable; default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44, 45, 46])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=default_variants(),
                        help=f"variants to train, the reference first (default: {' '.join(default_variants())})")
    parser.add_argument("--epochs", type=int, help="epochs of every run (default: the config's)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("soundness.md"))
    args = parser.parse_args()
    variants = [REFERENCE, *(v for v in args.variants if v != REFERENCE)]

    config = load_config(args.config).with_overrides(data_dir=data_dir_override(args.data_dir))
    if args.epochs:
        config = with_section(config, "training", epochs=args.epochs)
    experiments = select_experiments(config, args.only)
    data = load_dataset(config)
    done: list[str] = []  # sections of the finished experiments
    with tempfile.TemporaryDirectory(prefix="monkeyreport-soundness-") as tmp:
        config = with_section(config, "output", runs_dir=str(Path(tmp) / "runs"))
        build_image_cache(config, data)
        for experiment in experiments:
            print(f"\n## {experiment.name}\n", *table_head(variants), sep="\n", flush=True)
            rows: list[SeedRow] = []
            for seed in args.seeds:
                rows.append(SeedRow(seed, {v: train(config, experiment, data, seed, v) for v in variants}))
                print(format_row(rows[-1], variants), flush=True)
                # Rewritten after every seed: a long run stopped midway keeps what it finished.
                section = experiment_section(experiment, rows, variants)
                results.write_text(args.out, with_kept_notes(markdown(config, args, variants, [*done, section]),
                                                             args.out))
            print(*summarise(rows, variants), sep="\n", flush=True)
            done.append(section)
    print(f"wrote {args.out}", flush=True)


def default_variants() -> list[str]:
    """fp32 and fast, and bf16 where the CPU has bf16 instructions (elsewhere it is emulated,
    slow, and never what the fast path picks)."""
    return ["fp32", "fast", "bf16"] if fast_path.bf16_is_native() else ["fp32", "fast"]


def train(config: Config, experiment: ExperimentConfig, data: Dataset, seed: int, variant: str) -> Outcome:
    """A fresh run of `experiment` with `seed` in `variant`."""
    precision, memory_format = VARIANTS[variant]
    config = dataclasses.replace(with_section(config, "trainer", precision=precision, memory_format=memory_format),
                                 seed=seed)
    outcome = run_experiment(config, experiment, data.layout, data.records, data.fingerprint, force=True)
    return Outcome.of(outcome.metrics, Predictions.read(outcome.run_dir / "predictions.csv"))


def table_head(variants: list[str]) -> list[str]:
    columns = ["seed", REFERENCE]
    for v in variants[1:]:
        columns += [v, f"{v} − {REFERENCE} (points)", f"McNemar: only {REFERENCE} / only {v} right"]
    return [f"| {' | '.join(columns)} |", "|" + "---|" * len(columns)]


def format_row(row: SeedRow, variants: list[str]) -> str:
    return f"| {' | '.join(row.cells(variants))} |"


def summarise(rows: list[SeedRow], variants: list[str]) -> list[str]:
    """Per variant: the settings it ran in, mean ± SD accuracy over seeds and, against the
    reference, the mean paired difference with its 95 % t-interval and the verdict."""
    lines = []
    for v in variants:
        accuracies = [r.outcomes[v].accuracy for r in rows]
        settings = ", ".join(sorted({r.outcomes[v].setting for r in rows}))
        line = f"- {v} ({settings}): mean accuracy {statistics.fmean(accuracies):.4f}"
        if len(rows) > 1:
            line += f", SD over seeds {100 * statistics.stdev(accuracies):.1f} points"
        if v != REFERENCE:
            line += "; " + paired_difference([r.points(v) for r in rows])
        lines.append(line)
    return lines


def paired_difference(points: list[float]) -> str:
    """Mean of the per-seed differences to the reference, its 95 % t-interval (two or more
    seeds) and whether the mean lies within the band."""
    mean = statistics.fmean(points)
    text = f"mean difference {mean:+.2f} points against {REFERENCE}"
    if len(points) > 1:
        scale = statistics.stdev(points) / len(points) ** 0.5
        low, high = (scipy_stats.t.interval(0.95, len(points) - 1, loc=mean, scale=scale) if scale
                     else (mean, mean))
        text += f" (95 % interval {low:+.1f} to {high:+.1f})"
    within = abs(mean) <= BAND_POINTS
    return text + f": {'within' if within else 'outside'} the {BAND_POINTS:g}-point band"


def experiment_section(experiment: ExperimentConfig, rows: list[SeedRow], variants: list[str]) -> str:
    return "\n".join([f"## {experiment.name}", "", *table_head(variants),
                      *(format_row(r, variants) for r in rows), "", *summarise(rows, variants), ""])


def markdown(config: Config, args: argparse.Namespace, variants: list[str], tables: list[str]) -> str:
    t = config.training
    settings = "; ".join(f"{v}: precision {VARIANTS[v][0]!r}, memory_format {VARIANTS[v][1]!r}" for v in variants)
    return "\n".join([
        "# Numerical soundness: fp32 against the CPU fast path, over seeds",
        "",
        f"- Date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"- Machine: {machine()}",
        f"- Config: `{args.config}`; {t.epochs} epoch(s), crop {t.crop}, batch {t.batch_size}; "
        f"seeds asked for: {', '.join(map(str, args.seeds))}",
        f"- Variants: {settings}",
        f"- Command: `{shlex.join(['python', 'benchmarks/soundness.py', *sys.argv[1:]])}`",
        "",
        "Validation accuracy after the last epoch. The same seed gives every variant the same",
        "initial weights and data order. McNemar: exact test on the images only one of the two",
        f"runs classifies right. Band: the mean paired difference within {BAND_POINTS:g} points.",
        "",
        *tables,
    ])


if __name__ == "__main__":
    main()
