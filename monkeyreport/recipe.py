"""A run's training recipe ([training] keys, per experiment), built by timm's and Lightning's
factories: the optimizer and learning-rate schedule (used by lit_module.LitClassifier), the
augmentation of training images (datamodule.MonkeyDataModule) and the head-first phase of
`freeze_epochs` (a Callback). `selection` is training.py's (checkpoint callbacks), its split
holdout.py's.

The defaults are the original report's recipe and give exactly its numbers: Adam over the
trainable parameters at a constant rate, plain cross-entropy, no augmentation, the last epoch.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from timm.data.auto_augment import (
    augment_and_mix_transform,
    auto_augment_transform,
    rand_augment_transform,
)
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.scheduler.scheduler import Scheduler
from torch import nn
from torchvision.transforms import v2

from monkeyreport.config import TrainingConfig
from monkeyreport.errors import MonkeyReportError

STEP_DECAY_RATE = 0.1  # "step": the rate times this every third of the epochs
WARMUP_START = 0.01  # warm-up starts at this fraction of the rate


def make_optimizer(model: nn.Module, t: TrainingConfig) -> torch.optim.Optimizer:
    """timm's optimizer `t.optimizer` over the parameters of `model` that require a gradient.

    With `weight_decay`, timm leaves biases and normalisation weights (1-d parameters) undecayed.
    With `layer_decay`, each layer's rate is scaled by layer_decay ** (depth of the last layer
    - its depth), the layers being the model's `group_matcher` (models.Classifier); a model
    without one (a head alone, trained on features) is one layer, so it is not applied.
    The scales live in the groups' `lr_scale`, which timm's schedulers apply (`make_scheduler`).
    With the defaults this is torch.optim.Adam(trainable parameters, lr), one group.
    """
    layered = t.layer_decay > 0 and hasattr(model, "group_matcher")
    try:
        return create_optimizer_v2(model, opt=t.optimizer, lr=t.learning_rate, weight_decay=t.weight_decay,
                                   layer_decay=t.layer_decay if layered else None)
    except (ValueError, KeyError) as exc:
        raise MonkeyReportError(f"'training.optimizer' {t.optimizer!r}: timm cannot create it ({exc})") from None


def make_scheduler(optimizer: torch.optim.Optimizer, t: TrainingConfig) -> Scheduler | None:
    """timm's per-epoch schedule of the rate, or None for a constant rate (the default).

    "cosine" decays to 0 over `epochs`; "step" multiplies the rate by 0.1 every third of the
    epochs (at least every epoch). `warmup_epochs` ramps the rate linearly from 1 % of it,
    within the epochs (timm's warmup_prefix=False). "none" with warm-up or layer decay is
    timm's "constant" schedule, which applies them and then holds the rate.
    """
    name = t.scheduler
    if name == "none":
        if not t.warmup_epochs and not any("lr_scale" in group for group in optimizer.param_groups):
            return None
        name = "constant"
    scheduler, _ = create_scheduler_v2(optimizer, sched=name, num_epochs=t.epochs,
                                       decay_epochs=max(1, t.epochs // 3), decay_rate=STEP_DECAY_RATE,
                                       warmup_epochs=t.warmup_epochs, warmup_lr=t.learning_rate * WARMUP_START)
    return scheduler


def train_augmentation(augment: str, crop: int, mean: tuple[float, float, float]) -> v2.Transform | None:
    """The random transform of each training image (a uint8 CHW tensor, the cached crop), or
    None for "none". "flip": a horizontal flip half the time. A timm auto-augment string
    ("rand-m9-mstd0.5", "augmix-m5-w3", "original", "v0", ...): the flip, then the policy
    timm's parser builds from the string, with the parameters timm's training transform
    gives it (transforms_factory.transforms_imagenet_train) for this crop and mean."""
    if augment == "none":
        return None
    flip = v2.RandomHorizontalFlip()
    if augment == "flip":
        return flip
    hparams: dict[str, Any] = {"translate_const": int(crop * 0.45),
                               "img_mean": tuple(min(255, round(255 * m)) for m in mean)}
    try:
        if augment.startswith("rand"):
            policy = rand_augment_transform(augment, hparams)
        elif augment.startswith("augmix"):
            policy = augment_and_mix_transform(augment, hparams | {"translate_pct": 0.3})
        else:
            policy = auto_augment_transform(augment, hparams)
    except (AssertionError, ValueError, KeyError, IndexError) as exc:
        raise MonkeyReportError(f"'training.augment' {augment!r}: timm cannot parse it "
                                f"({type(exc).__name__}: {exc})") from None
    return v2.Compose([flip, v2.ToPILImage(), policy, v2.PILToTensor()])


class HeadFirst(Callback):
    """`freeze_epochs` of a fine-tuned experiment (fastai's fine_tune): for the first `epochs`
    epochs the backbone is frozen as in a frozen experiment (no gradient, eval mode, so its
    weights and BatchNorm statistics stay as loaded) and only the head trains; from then on
    the whole network.

    The optimizer holds every parameter from the start, in timm's groups; one without a
    gradient is skipped by the optimizer (no update, no state, no weight decay), so the
    backbone joins the optimization at epoch `epochs` with fresh optimizer state, its groups'
    rates following the schedule. A resumed run freezes or not by its epoch, like a straight
    one. With several processes DDP must allow parameters without gradient (strategy
    "ddp_find_unused_parameters_true"; training.py says so).
    """

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.model.freeze_backbone(trainer.current_epoch < self.epochs)
