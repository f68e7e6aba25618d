"""The LightningModules: `LitClassifier` trains a network, `FeatureExtractor` runs a frozen
backbone once. What they log per epoch becomes history.csv through history.EpochHistory."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torchmetrics
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from monkeyreport.config import TrainingConfig
from monkeyreport.datamodule import Batch
from monkeyreport.recipe import make_optimizer, make_scheduler

# What LitClassifier logs once per epoch, by the history.csv column it fills. The training
# loss of the epoch has its own name: "train_loss" is each step's loss, for the progress line.
EPOCH_METRICS = {"train_loss": "train_loss_epoch", "train_accuracy": "train_accuracy", "val_loss": "val_loss",
                 "val_accuracy": "val_accuracy", "val_macro_f1": "val_macro_f1"}


class LitClassifier(L.LightningModule):
    """Cross-entropy training with the recipe of `training` (recipe.py: timm's optimizer and
    per-epoch schedule; `label_smoothing` in the training loss only, so that the validation
    loss stays plain cross-entropy, comparable between recipes); per epoch the training loss
    and accuracy (over the epoch's images as they were trained on: augmented, in train mode)
    and validation loss, accuracy and macro F1, logged as `EPOCH_METRICS`.

    With several processes, each validates its own share of the images, each image in exactly
    one process (the "each_once" loader), and the metrics reduce their states over all
    processes when computed: every validation image counts once.
    """

    def __init__(self, model: nn.Module, num_classes: int, training: TrainingConfig) -> None:
        super().__init__()
        self.model = model
        self.training_config = training
        self.loss = nn.CrossEntropyLoss(label_smoothing=training.label_smoothing)
        self.val_criterion = nn.CrossEntropyLoss()
        self.train_loss = torchmetrics.MeanMetric()
        self.train_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.val_loss = torchmetrics.MeanMetric()
        self.val_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.val_macro_f1 = MulticlassF1Score(num_classes, average="macro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        x, y, _ = batch
        logits = self(x)
        loss = self.loss(logits, y)
        self.train_loss.update(loss.detach(), weight=len(y))
        self.train_accuracy.update(logits.detach(), y)
        self.log("train_loss", loss, prog_bar=True)
        self.log_dict({EPOCH_METRICS["train_loss"]: self.train_loss,
                       EPOCH_METRICS["train_accuracy"]: self.train_accuracy}, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        x, y, _ = batch
        logits = self(x)
        self.val_loss.update(self.val_criterion(logits, y), weight=len(y))
        self.val_accuracy.update(logits, y)
        self.val_macro_f1.update(logits, y)
        self.log(EPOCH_METRICS["val_accuracy"], self.val_accuracy, prog_bar=True)
        self.log_dict({EPOCH_METRICS["val_loss"]: self.val_loss, EPOCH_METRICS["val_macro_f1"]: self.val_macro_f1})

    def predict_step(self, batch: Batch, batch_idx: int) -> Batch:
        """Softmax probabilities, labels and sample indices of this batch in every process."""
        x, y, index = batch
        return self.all_gather((torch.softmax(self(x).float(), dim=1), y, index))

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        optimizer = make_optimizer(self.model, self.training_config)
        scheduler = make_scheduler(optimizer, self.training_config)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_train_start(self) -> None:
        """Set the rate of the epoch training starts at (0, or a resumed run's): timm's schedules
        set a rate by epoch, and Lightning steps them only after each epoch."""
        for config in self.trainer.lr_scheduler_configs:
            config.scheduler.step(epoch=self.current_epoch)

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """Lightning calls this after each epoch, before counting it: the rate of the next one."""
        scheduler.step(epoch=self.current_epoch + 1)


class FeatureExtractor(L.LightningModule):
    """Runs a frozen backbone over normalised images; used once per frozen experiment."""

    progress_label = "features"  # what the progress line calls its pass

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> Batch:
        """Features, labels and sample indices of this batch in every process."""
        x, y, index = batch
        return self.all_gather((self.backbone(x).float(), y, index))
