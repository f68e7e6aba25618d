"""The LightningModules: `LitClassifier` trains a network, `FeatureExtractor` runs a frozen
backbone once. What they log per epoch becomes history.csv through history.EpochHistory."""

from __future__ import annotations

import lightning as L
import torch
import torchmetrics
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from monkeyreport.datamodule import Batch

# What LitClassifier logs once per epoch, by the history.csv column it fills. The training
# loss of the epoch has its own name: "train_loss" is each step's loss, for the progress line.
EPOCH_METRICS = {"train_loss": "train_loss_epoch", "val_loss": "val_loss", "val_accuracy": "val_accuracy",
                 "val_macro_f1": "val_macro_f1"}


class LitClassifier(L.LightningModule):
    """Cross-entropy training with Adam; per epoch the training loss (the mean over the epoch's
    images) and validation loss, accuracy and macro F1, logged as `EPOCH_METRICS`.

    With several processes, each validates its own share of the images, each image in exactly
    one process (the "each_once" loader), and the metrics reduce their states over all
    processes when computed: every validation image counts once.
    """

    def __init__(self, model: nn.Module, num_classes: int, learning_rate: float) -> None:
        super().__init__()
        self.model = model
        self.learning_rate = learning_rate
        self.loss = nn.CrossEntropyLoss()
        self.train_loss = torchmetrics.MeanMetric()
        self.val_loss = torchmetrics.MeanMetric()
        self.val_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.val_macro_f1 = MulticlassF1Score(num_classes, average="macro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        x, y, _ = batch
        loss = self.loss(self(x), y)
        self.train_loss.update(loss.detach(), weight=len(y))
        self.log("train_loss", loss, prog_bar=True)
        self.log(EPOCH_METRICS["train_loss"], self.train_loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        x, y, _ = batch
        logits = self(x)
        self.val_loss.update(self.loss(logits, y), weight=len(y))
        self.val_accuracy.update(logits, y)
        self.val_macro_f1.update(logits, y)
        self.log(EPOCH_METRICS["val_accuracy"], self.val_accuracy, prog_bar=True)
        self.log_dict({EPOCH_METRICS["val_loss"]: self.val_loss, EPOCH_METRICS["val_macro_f1"]: self.val_macro_f1})

    def predict_step(self, batch: Batch, batch_idx: int) -> Batch:
        """Softmax probabilities, labels and sample indices of this batch in every process."""
        x, y, index = batch
        return self.all_gather((torch.softmax(self(x).float(), dim=1), y, index))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=self.learning_rate)


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
