"""The pipeline: eda -> train -> model summaries -> render, each skipped when unchanged.

Failed experiments do not stop the build: they appear in the report as "falló" and the
build reports them at the end (the CLI exits non-zero).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from monkeyreport.config import Config, stable_hash
from monkeyreport.results import RESULTS_SCHEMA, write_text


def _training_stamp(config: Config, dataset_fingerprint: str) -> str:
    """Training inputs plus the state of every metrics.json: equal stamps, nothing to train."""
    files = []
    for exp in config.experiments:
        metrics = config.runs_dir / exp.name / "metrics.json"
        stat = metrics.stat() if metrics.is_file() else None
        files.append([exp.name, stat.st_size if stat else None, stat.st_mtime_ns if stat else None])
    return stable_hash(RESULTS_SCHEMA, config.experiments, config.seed, config.training, config.trainer,
                       str(config.runs_dir.resolve()), dataset_fingerprint, files)


@dataclass
class BuildOutcome:
    lines: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # result files render could not read
    outputs: list[Path] = field(default_factory=list)


def build(config: Config, force: bool = False, templates_dir: Path | None = None,
          echo: Callable[[str], None] = print, show_progress: bool = True) -> BuildOutcome:
    """Run every stage in order; prints one summary line per stage through `echo`."""
    outcome = BuildOutcome()

    def say(line: str) -> None:
        outcome.lines.append(line)
        echo(line)

    # Stage 1: exploratory analysis (skips itself when data and settings are unchanged).
    from monkeyreport.eda import run_eda

    start = time.perf_counter()
    eda = run_eda(config, force=force, show_progress=show_progress)
    s = eda.summary
    say(f"eda {'unchanged, skipped' if eda.skipped else f'done in {time.perf_counter() - start:.1f} s'}: "
        f"{s['splits']['training']['total']} training, {s['splits']['validation']['total']} validation images")

    # Stage 2: training (finished experiments with the same config hash are skipped). A stamp
    # of the last complete training stage avoids even importing torch when nothing changed.
    start = time.perf_counter()
    stamp_path = config.report_dir / ".train.sha"
    stamp = _training_stamp(config, s.get("dataset_fingerprint", ""))
    if not force and stamp_path.is_file() and stamp_path.read_text().strip() == stamp:
        say(f"train unchanged, skipped: {len(config.experiments)} experiment(s) -> {config.runs_dir}")
    else:
        from monkeyreport.training import ExperimentFailure, train_all

        results = train_all(config, force=force, show_progress=show_progress)
        failed = [r for r in results if isinstance(r, ExperimentFailure)]
        skipped = sum(1 for r in results if not isinstance(r, ExperimentFailure) and r.skipped)
        outcome.failed = [f.name for f in failed]
        for f in failed:
            say(f"train: {f.summary()}")
        say(f"train done in {time.perf_counter() - start:.1f} s: {len(results)} experiment(s), "
            f"{skipped} unchanged, {len(results) - skipped - len(failed)} trained, "
            f"{len(failed)} failed -> {config.runs_dir}")
        if failed:
            stamp_path.unlink(missing_ok=True)
        else:
            write_text(stamp_path, _training_stamp(config, s.get("dataset_fingerprint", "")) + "\n")

    # Stage 3: architecture summaries for Figuras 2-4 (kept when present).
    from monkeyreport.context import DIAGRAM_ARCHITECTURES

    start = time.perf_counter()
    names = dict.fromkeys([e.architecture for e in config.experiments] + list(DIAGRAM_ARCHITECTURES))
    missing = [a for a in names if not (config.report_dir / "models" / f"{a}.json").is_file()]
    written = []
    if force or missing:  # only then import torch
        from monkeyreport.summaries import write_summaries

        summaries = write_summaries(config, force=force, extra=list(DIAGRAM_ARCHITECTURES))
        written = [o.architecture for o in summaries if not o.skipped]
    say(f"summaries {'unchanged, skipped' if not written else 'written for ' + ', '.join(written)} "
        f"({time.perf_counter() - start:.1f} s) -> {config.report_dir / 'models'}")

    # Stage 4: the report.
    from monkeyreport.render import render

    rendered = render(config, "both", strict=False, templates_dir=templates_dir, force=force)
    outcome.outputs = rendered.outputs
    outcome.problems = rendered.problems
    say(rendered.summary())
    return outcome
