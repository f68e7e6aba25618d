"""The pipeline: eda -> train -> model summaries -> interpretation -> render, each skipped
when unchanged.

Failed experiments do not stop the build: they appear in the report as "falló" and the
build reports them at the end (the CLI exits non-zero).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from monkeyreport.config import Config, stable_hash
from monkeyreport import results
from monkeyreport.results import RESULTS_SCHEMA, ReportFiles, write_text


# The variables from which Lightning takes a process's rank before any Trainer exists
# (lightning_fabric.utilities.rank_zero). A process it starts as another rank has one set.
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def is_main_process() -> bool:
    """Whether this process does the work outside training (global rank 0). Without any rank
    variable it is the only process, and asking Lightning would cost seconds of imports on
    every build; with one, Lightning decides."""
    if not any(os.environ.get(name) for name in RANK_VARIABLES):
        return True
    from monkeyreport.training import is_global_zero

    return is_global_zero()


def _training_stamp(config: Config, dataset_fingerprint: str) -> str:
    """Training inputs plus the state of every metrics.json: equal stamps, nothing to train."""
    files = []
    for exp in config.experiments:
        metrics = results.RunFiles.of(config.runs_dir, exp.name).metrics
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
    helper: bool = False  # a process that only trained beside rank 0 (see `build`)


def build(config: Config, force: bool = False, templates_dir: Path | None = None,
          echo: Callable[[str], None] = print, show_progress: bool = True) -> BuildOutcome:
    """Run every stage in order; prints one summary line per stage, and one per experiment
    trained or reused, through `echo`. `show_progress`: progress lines on a terminal.

    With several training processes, Lightning starts the others by running this command
    again (training.py). They are not global rank 0: they make the same training calls as
    rank 0, which needs them for every collective, and nothing else; no stage of theirs writes.
    """
    if not is_main_process():
        from monkeyreport.training import train_all

        train_all(config, force=force, show_progress=False)
        return BuildOutcome(helper=True)

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

    # Stage 2: training (finished experiments with the same identity are skipped). A stamp of
    # the last complete training stage skips even listing and planning them when nothing changed.
    start = time.perf_counter()
    stamp_path = config.report_dir / ".train.sha"
    stamp = _training_stamp(config, s.get("dataset_fingerprint", ""))
    if not force and stamp_path.is_file() and stamp_path.read_text().strip() == stamp:
        say(f"train unchanged, skipped: {len(config.experiments)} experiment(s) -> {config.runs_dir}")
    else:
        from monkeyreport.training import ExperimentFailure, train_all

        ran = train_all(config, force=force, show_progress=show_progress,
                        echo=lambda line: say(f"train: {line}"))
        failed = [r for r in ran if isinstance(r, ExperimentFailure)]
        skipped = sum(1 for r in ran if not isinstance(r, ExperimentFailure) and r.skipped)
        outcome.failed = [f.name for f in failed]
        say(f"train done in {time.perf_counter() - start:.1f} s: {len(ran)} experiment(s), "
            f"{skipped} unchanged, {len(ran) - skipped - len(failed)} trained, "
            f"{len(failed)} failed -> {config.runs_dir}")
        if failed:
            stamp_path.unlink(missing_ok=True)
        else:
            write_text(stamp_path, _training_stamp(config, s.get("dataset_fingerprint", "")) + "\n")

    # Stage 3: a summary of each configured architecture, for its diagram (kept when current).
    start = time.perf_counter()
    report = ReportFiles(config.report_dir)
    stale = [e.architecture for e in config.experiments
             if (results.read_json_if_exists(report.model_summary(e.architecture)) or {}).get("schema")
             != results.SUMMARY_SCHEMA]
    written = []
    if force or stale:  # only then import torch
        from monkeyreport.summaries import write_summaries

        written = [o.architecture for o in write_summaries(config, force=force) if not o.skipped]
    say(f"summaries {'unchanged, skipped' if not written else 'written for ' + ', '.join(written)} "
        f"({time.perf_counter() - start:.1f} s) -> {report.models_dir}")

    # Stage 4: interpretation figures (top losses, Grad-CAM, leakage pairs), kept when current;
    # a figure that cannot be drawn becomes a note in the report, not a failed build.
    from monkeyreport.interpret import run_interpretation
    from monkeyreport.project import templates_for

    species_from = templates_dir or templates_for(Path.cwd())
    say(run_interpretation(config, force=force, templates_dir=species_from).summary())

    # Stage 5: the report.
    from monkeyreport.render import render

    rendered = render(config, "both", strict=False, templates_dir=templates_dir, force=force)
    outcome.outputs = rendered.outputs
    outcome.problems = rendered.problems
    say(rendered.summary())
    return outcome
