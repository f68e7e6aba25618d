"""Where each run stands, from its files alone and without torch: the identity that decides
whether a finished run is reused (`experiment_hash`), and each run's state for
`monkeyreport status`.

The number of processes is part of a run's identity too (run_plan.py); it is known only once
Lightning has resolved `[trainer]`, so `status` leaves it out and training checks it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from monkeyreport.config import Config, ExperimentConfig, Run, resolve_data_root, stable_hash
from monkeyreport.errors import MonkeyReportError
from monkeyreport.results import RESULTS_SCHEMA, RunFailure, RunFiles, RunMetrics, RunStart


def experiment_hash(config: Config, experiment: ExperimentConfig) -> str:
    """Everything in the run's config (`Config.for_run`: its seed, its experiment's recipe)
    that changes an experiment's numbers (not where or how fast
    it runs; the number of processes, which does, is in the identity beside it). Precision
    and memory format count as configured: what "auto" picks on this machine is recorded in
    metrics.json, like the device, so a finished run is not redone to measure again."""
    t = config.training
    parts = [RESULTS_SCHEMA, experiment.identity, config.seed, t.epochs, t.batch_size, t.learning_rate, t.resize,
             t.crop, t.max_images_per_class, config.trainer.precision, config.trainer.memory_format]
    changes = t.recipe_changes()
    return stable_hash(*parts, changes) if changes else stable_hash(*parts)


def run_start(config: Config, experiment: ExperimentConfig, dataset_fingerprint: str, world_size: int) -> RunStart:
    """What a run of `experiment` starts from (run.json): its identity, and whether its
    checkpoint holds the head alone. `config` is the run's own (`Config.for_run`)."""
    return RunStart(experiment_hash(config, experiment), dataset_fingerprint, world_size,
                    trains_on_features=config.training.trains_on_features(experiment.frozen))


State = Literal["finished", "stale", "resumable", "failed", "not trained"]


@dataclass(frozen=True)
class RunState:
    experiment: str
    fresh: bool
    state: State
    reasons: list[str]

    def line(self) -> str:
        why = f": {'; '.join(self.reasons)}" if self.reasons else ""
        return f"  run {self.experiment}: {self.state}{why}"


def dataset_fingerprint(config: Config) -> str | None:
    """The dataset's fingerprint (data.fingerprint), or None when it cannot be found."""
    from monkeyreport.data import fingerprint, list_files, locate

    try:
        layout = locate(resolve_data_root(config))
    except MonkeyReportError:
        return None
    return fingerprint(layout, list_files(layout))


def run_states(config: Config) -> list[RunState]:
    """Each configured run: finished with the current settings and data, or why not."""
    fingerprint = dataset_fingerprint(config)
    return [_state(config.for_run(run), run, fingerprint) for run in config.runs]


def _state(config: Config, run: Run, fingerprint: str | None) -> RunState:
    experiment, name = run.experiment, run.name
    files = RunFiles.of(config.runs_dir, name)
    expected = run_start(config, experiment, fingerprint or "", 1)
    if files.metrics.is_file():
        try:
            metrics = RunMetrics.read(files.metrics)
        except MonkeyReportError as exc:
            return RunState(name, False, "stale", [str(exc)])
        reasons = []
        if metrics.config_hash != expected.config_hash:
            reasons.append("its settings changed")
        if fingerprint is None:
            reasons.append("dataset not found")
        elif metrics.dataset_fingerprint != fingerprint:
            reasons.append("the dataset changed")
        if not reasons:
            return RunState(name, True, "finished", [])
        return RunState(name, False, "stale", [*reasons, *_resume(files, expected)])
    failure = RunFailure.read(files.failed)
    resume = _resume(files, expected)
    if failure:
        return RunState(name, False, "failed", [failure.reason, *resume])
    return RunState(name, False, "resumable" if resume else "not trained", resume)


def _resume(files: RunFiles, expected: RunStart) -> list[str]:
    """'resumes from <checkpoint>' when the run in checkpoints/ started as this one would
    (its number of processes aside: see the module docstring)."""
    started = RunStart.read(files.started)
    if files.checkpoint.is_file() and started and started == replace(expected, world_size=started.world_size):
        return [f"resumes from {files.checkpoint}"]
    return []


def finished(config: Config) -> dict[str, list[tuple[Run, RunMetrics]]]:
    """Each experiment's finished runs with readable metrics, seeds in config order; an
    experiment without any is left out (render reports the unreadable ones)."""
    out: dict[str, list[tuple[Run, RunMetrics]]] = {}
    for run in config.runs:
        path = RunFiles.of(config.runs_dir, run.name).metrics
        if path.is_file():
            try:
                metrics = RunMetrics.read(path)
            except MonkeyReportError:
                continue
            out.setdefault(run.experiment.name, []).append((run, metrics))
    return out
