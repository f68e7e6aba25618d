"""Where and how the runs compute: processes and device from `[trainer]` and the launch
environment, and the memory format and precision of each experiment's network pass.

On a CPU the pass runs in the fastest layout (channels-last or contiguous) and precision (fp32
or bf16 autocast) measured for the architecture (fast_path.py); `compute_setting` makes that
choice per experiment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from monkeyreport import fast_path
from monkeyreport.results import CacheFiles
from monkeyreport.config import Config, ExperimentConfig
from monkeyreport.console import lightning_output_to, notice
from monkeyreport.fast_path import ComputeSetting
from monkeyreport.models import create


@dataclass(frozen=True)
class Placement:
    """Where the runs compute, as Lightning resolves `[trainer]` and the launch environment."""

    world_size: int  # processes training together; it multiplies the effective batch
    device_type: str  # "cpu", "cuda", "mps", ...


def trainer_placement(config: Config, precision: str = fast_path.FP32) -> dict[str, Any]:
    """Where and how to compute, as Trainer arguments: the config's [trainer] section (passed
    through), with the precision resolved (`compute_setting`)."""
    tc = config.trainer
    return {"accelerator": tc.accelerator, "devices": tc.devices, "precision": precision,
            "strategy": tc.strategy, "num_nodes": tc.num_nodes}


def resolve_placement(config: Config) -> Placement:
    """Processes and device type as Lightning resolves `[trainer]` and the launch environment.
    Building the Trainer also gives this process its global rank for `rank_zero_only`. Its
    device banner goes nowhere: every experiment's log has the same."""
    with lightning_output_to(None):
        trainer = L.Trainer(**trainer_placement(config), logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False)
    return Placement(trainer.world_size, trainer.strategy.root_device.type)


def is_global_zero() -> bool:
    """Whether this is global rank 0, the process that writes and reports. Lightning takes the
    rank from the launch environment until a Trainer is built (a process it started to
    share the training has LOCAL_RANK > 0), then from the Trainer."""
    return rank_zero_only.rank == 0


def compute_setting(config: Config, experiment: ExperimentConfig, num_classes: int, placement: Placement,
                    announce: bool = False) -> ComputeSetting:
    """Memory format and precision of the experiment's network pass: its training steps, or
    for a frozen run on features the feature pass (the head on features trains in fp32).
    A choice measured just now is announced when `announce`."""
    t = config.training
    kind: fast_path.Pass = "features" if t.trains_on_features(experiment.frozen) else "training"

    def measure(memory_format: str, precision: str) -> float:
        with torch.random.fork_rng():  # a throwaway model: the run's random stream stays as it was
            model = create(experiment.architecture, num_classes, "none", experiment.frozen).model
            return fast_path.seconds_per_step(model.backbone if kind == "features" else model, kind,
                                              t.batch_size, t.crop, num_classes, precision,
                                              channels_last=memory_format == fast_path.CHANNELS_LAST)

    key = fast_path.pass_key(experiment.architecture, kind, experiment.frozen, t.batch_size, t.crop)
    setting, measured = fast_path.choose(config.trainer.precision, config.trainer.memory_format,
                                         placement.device_type, placement.world_size, measure,
                                         CacheFiles(config.runs_dir).fast_path, key)
    if measured and announce:
        timings = ", ".join(f"{name} {s:.2f} s" for name, s in setting.seconds_per_step.items())
        notice(f"{experiment.architecture} ({kind}) on this CPU: {timings} per step -> {setting.describe()}")
    return setting
