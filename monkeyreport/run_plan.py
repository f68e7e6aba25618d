"""What to do with one experiment's run folder before training: skip, resume or start afresh.

A run whose identity (config hash, dataset fingerprint, world size) matches a finished
metrics.json is skipped; an unfinished one resumes from checkpoints/last.ckpt when its
run.json (`RunStart`) is the one this run would write; otherwise it starts afresh.

A damaged checkpoint (a full disk, a copy cut short) is found while planning
(`checkpoint_problem`): rank 0 moves it aside and the run starts afresh. Every process decides
the same: one that plans after the move finds no checkpoint, one that plans before it (another
node) finds the same damage.
"""

from __future__ import annotations

import pickle
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_only

from monkeyreport import results
from monkeyreport.config import Config, ExperimentConfig
from monkeyreport.console import log
from monkeyreport.results import RunFiles, RunStart
from monkeyreport.run_state import run_start


@dataclass(frozen=True)
class Plan:
    """What to do with one experiment, decided from the files on disk before training starts."""

    started: RunStart  # what this run starts from: recorded in run.json at a fresh start
    finished: bool  # reuse metrics.json
    resume: bool  # continue from checkpoints/last.ckpt

    @property
    def identity(self) -> dict[str, Any]:
        """What identifies the run's results: recorded in metrics.json."""
        return self.started.identity


def plan_experiment(config: Config, experiment: ExperimentConfig, dataset_fingerprint: str,
                    world_size: int, force: bool = False, run_name: str | None = None) -> Plan:
    """The plan for `experiment`, from the files in its run folder (`run_name`, by default the
    experiment's name); `config` is the run's own (`Config.for_run`)."""
    name = run_name or experiment.name
    files = RunFiles.of(config.runs_dir, name)
    started = run_start(config, experiment, dataset_fingerprint, world_size)
    finished = not force and _matches(results.read_json_if_exists(files.metrics), started.identity)
    resume = (not force and not finished and files.checkpoint.is_file()
              and RunStart.read(files.started) == started
              and _usable_checkpoint(files, name))
    return Plan(started, finished, resume)


def _matches(finished: dict[str, Any] | None, identity: dict[str, Any]) -> bool:
    """Whether a metrics.json belongs to a run with this identity. One written before
    `world_size` was recorded counts as one process."""
    if not finished:
        return False
    recorded = {"world_size": 1} | finished
    return all(recorded.get(key) == value for key, value in identity.items())


def _usable_checkpoint(files: RunFiles, name: str) -> bool:
    """Whether the run can resume from its checkpoint; a damaged one is set aside."""
    problem = checkpoint_problem(files.checkpoint)
    if problem:
        _set_aside(files, name, problem)
    return problem is None


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint at `path` cannot be resumed from, or None.

    Cheap and thorough: the zip CRC-32 of every member covers every byte (a truncated or
    overwritten file, a flipped bit), and a weights-only load with the tensor data mapped,
    not read, checks that its records unpickle to a Lightning checkpoint.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            corrupt = archive.testzip()
        if corrupt:
            return f"checksum mismatch in {corrupt}"
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (OSError, EOFError, ValueError, RuntimeError, zipfile.BadZipFile, pickle.UnpicklingError) as exc:
        reason = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {reason[0][:120]}" if reason else type(exc).__name__
    return None if isinstance(state, dict) and "state_dict" in state else "not a Lightning checkpoint"


@rank_zero_only
def _set_aside(files: RunFiles, name: str, problem: str) -> None:
    """Keep a damaged checkpoint beside the run, outside checkpoints/ (which a fresh start
    clears), and say so in one line."""
    kept = files.damaged_checkpoint(time.strftime("%Y%m%dT%H%M%S"))
    try:
        files.checkpoint.rename(kept)
    except OSError as exc:
        log.warning(f"{name}: checkpoint {files.checkpoint} is unreadable ({problem}) and could not be "
                    f"moved aside ({exc.strerror}); starting afresh")
        return
    log.warning(f"{name}: checkpoint {files.checkpoint} is unreadable ({problem}); "
                f"kept as {kept.name}, starting afresh")


@rank_zero_only
def prepare_run_dir(files: RunFiles, plan: Plan) -> None:
    """Forget an earlier failure; on a fresh start also the checkpoint and results of an
    earlier run (none may sit beside the new ones), and record what this run starts from."""
    files.failed.unlink(missing_ok=True)
    if plan.resume:
        return
    shutil.rmtree(files.checkpoint.parent, ignore_errors=True)
    for path in files.results:
        path.unlink(missing_ok=True)
    plan.started.write(files.started)
