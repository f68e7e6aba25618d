"""`monkeyreport build`: every stage of the pipeline (pipeline.py), each run only when stale.

Failed experiments do not stop the build: they appear in the report as "falló" and the
build reports them at the end (the CLI exits non-zero).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable

from monkeyreport.config import Config
from monkeyreport.pipeline import Options, PipelineOutcome, downstream, run, upstream

# The variables from which Lightning takes a process's rank before any Trainer exists
# (lightning_fabric.utilities.rank_zero). A process it starts as another rank has one set.
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def is_main_process() -> bool:
    """Whether this process does the work outside training (global rank 0). Without any rank
    variable it is the only process, and asking Lightning would cost seconds of imports on
    every build; with one, Lightning decides."""
    if not any(os.environ.get(name) for name in RANK_VARIABLES):
        return True
    from monkeyreport.placement import is_global_zero

    return is_global_zero()


def build(config: Config, force: bool = False, templates_dir: Path | None = None,
          echo: Callable[[str], None] = print, show_progress: bool = True,
          train: Callable[[], bool] | None = None) -> PipelineOutcome | None:
    """Run every stale stage in order, one result line each through `echo`; returns None in
    a process that only trained.

    `train`, when given, trains in other processes (`--jobs`: workers.py) after the stages
    before training; the train stage then finds their runs finished, or failed in this build.

    With several training processes, Lightning starts the others by running this command
    again (training.py). They are not global rank 0: they make the same training calls as
    rank 0, which needs them for every collective, and nothing else; no stage of theirs writes.
    """
    if not is_main_process():
        from monkeyreport.training import train_all

        train_all(config, force=force, show_progress=False)
        return None
    options = Options(force=force, show_progress=show_progress, templates_dir=templates_dir, echo=echo)
    if train is None:
        return run(config, options)
    run(config, options, upstream("train"))
    train()
    # The workers did what --force asked of training; the stages after it are redone.
    after = [name for name in downstream("train") if name != "train"] if force else []
    return run(config, dataclasses.replace(options, force=False), forced=after)
