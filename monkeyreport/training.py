"""Training: the LightningModule, the Trainer built from config, and `run_experiment`.

`run_experiment` leaves the results contract in `runs/<experiment>/`:
metrics.json (written last: its presence means the run finished), history.csv,
predictions.csv and checkpoints/last.ckpt. A run whose config hash and dataset fingerprint
match a finished one is skipped; an unfinished one resumes from its last checkpoint.
"""

from __future__ import annotations

import csv
import io
import logging
import platform
import shutil
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import timm
import torch
import torchmetrics
import torchvision
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import TensorDataset
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
)

from monkeyreport import results
from monkeyreport.results import RESULTS_SCHEMA
from monkeyreport.config import Config, ExperimentConfig, resolve_data_root, stable_hash
from monkeyreport.data import DatasetLayout, ImageRecord, list_files, locate, scan
from monkeyreport.data import fingerprint as fingerprint_dataset
from monkeyreport.datamodule import (
    FeatureDataModule,
    MonkeyDataModule,
    Preprocessing,
    Sample,
    select_samples,
)
from monkeyreport.errors import MonkeyReportError
from monkeyreport.models import count_parameters, create, get_architecture, list_architectures

RESULT_FILES = ("metrics.json", "history.csv", "predictions.csv")
HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_accuracy", "val_macro_f1", "seconds")

# A frozen backbone is in eval mode on purpose; Lightning warns about that at every fit.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
# Lightning's own use of a torch API deprecated in recent torch releases; nothing to act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
# Lightning advertises a cloud logger at every Trainer; this toolkit logs to CSV on disk.
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: "litlogger" not in record.getMessage())


class Interrupted(MonkeyReportError):
    """The user stopped training (Ctrl-C); finished epochs are kept in the checkpoint."""


class LitClassifier(L.LightningModule):
    """Cross-entropy training with Adam; validation accuracy and macro F1 per epoch."""

    def __init__(self, model: nn.Module, num_classes: int, learning_rate: float) -> None:
        super().__init__()
        self.model = model
        self.learning_rate = learning_rate
        self.loss = nn.CrossEntropyLoss()
        self.train_loss = torchmetrics.MeanMetric()
        self.val_loss = torchmetrics.MeanMetric()
        self.val_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.val_macro_f1 = MulticlassF1Score(num_classes, average="macro")
        self.history: list[dict[str, float]] = []
        self._epoch_start = 0.0

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss(self(x), y)
        self.train_loss.update(loss.detach(), weight=len(y))
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_loss.update(self.loss(logits, y), weight=len(y))
        self.val_accuracy.update(logits, y)
        self.val_macro_f1.update(logits, y)

    def on_validation_epoch_end(self) -> None:
        row = {
            "epoch": self.current_epoch + 1,
            "train_loss": float(self.train_loss.compute()) if self.train_loss.update_count else float("nan"),
            "val_loss": float(self.val_loss.compute()),
            "val_accuracy": float(self.val_accuracy.compute()),
            "val_macro_f1": float(self.val_macro_f1.compute()),
            "seconds": round(time.perf_counter() - self._epoch_start, 3),  # training + validation
        }
        for metric in (self.train_loss, self.val_loss, self.val_accuracy, self.val_macro_f1):
            metric.reset()
        if not self.trainer.sanity_checking:
            self.history.append(row)
        self.log_dict({"val_accuracy": row["val_accuracy"], "val_f1": row["val_macro_f1"]}, prog_bar=True)

    def predict_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        return torch.softmax(self(x).float(), dim=1), y

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=self.learning_rate)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["history"] = self.history

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("history", []))


@dataclass(frozen=True)
class ExperimentResult:
    name: str
    run_dir: Path
    skipped: bool
    metrics: dict[str, Any]

    def summary(self) -> str:
        m = self.metrics
        state = "unchanged, skipped" if self.skipped else f"{m['epochs']} epochs in {m['train_seconds']:.1f} s on {m['device']}"
        return (f"{self.name}: accuracy {m['accuracy']:.4f}, macro F1 {m['macro_f1']:.4f} "
                f"({state}) -> {self.run_dir}")


def experiment_hash(config: Config, experiment: ExperimentConfig) -> str:
    """Everything that changes an experiment's numbers (not where or how fast it runs)."""
    t = config.training
    return stable_hash(RESULTS_SCHEMA, experiment, config.seed, t.epochs, t.batch_size,
                       t.learning_rate, t.resize, t.crop, t.max_images_per_class,
                       config.trainer.precision)


def run_experiment(config: Config, experiment: ExperimentConfig, layout: DatasetLayout,
                   records: list[ImageRecord], dataset_fingerprint: str,
                   force: bool = False) -> ExperimentResult:
    """Train and evaluate one experiment, or reuse its finished results."""
    run_dir = config.runs_dir / experiment.name
    t = config.training
    on_features = experiment.frozen and t.feature_cache
    identity = {"config_hash": experiment_hash(config, experiment),
                "dataset_fingerprint": dataset_fingerprint}
    if not force and is_finished(config, experiment, dataset_fingerprint):
        return ExperimentResult(experiment.name, run_dir, True, results.read_json(run_dir / "metrics.json"))
    (run_dir / "failed.json").unlink(missing_ok=True)

    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    started = identity | {"trains_on_features": on_features}  # the checkpoint holds the head alone then
    resume = not force and checkpoint.is_file() and results.read_json_if_exists(run_dir / "run.json") == started
    if not resume:  # a fresh start: no result of an earlier run may sit beside the new ones
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        for name in RESULT_FILES:
            (run_dir / name).unlink(missing_ok=True)
        results.write_json(run_dir / "run.json", started)

    L.seed_everything(config.seed, workers=True, verbose=False)
    created = create(experiment.architecture, len(layout.classes), experiment.pretrained, experiment.frozen)
    preprocessing = Preprocessing(t.resize, t.crop, created.mean, created.std)
    images = MonkeyDataModule(
        select_samples(layout, records, "training", t.max_images_per_class, config.seed),
        select_samples(layout, records, "validation", t.max_images_per_class, config.seed),
        preprocessing, t.batch_size, t.num_workers, config.data.max_image_pixels,
        cache_dir=config.runs_dir / "cache" if t.image_cache else None,
        dataset_fingerprint=dataset_fingerprint, seed=config.seed,
    )
    start = time.perf_counter()
    if on_features:
        datamodule: L.LightningDataModule = extract_features(config, created.model.backbone, images)
        module = LitClassifier(created.model.head, len(layout.classes), t.learning_rate)
    else:
        datamodule = images
        module = LitClassifier(created.model, len(layout.classes), t.learning_rate)
    trainer = _trainer(config, run_dir)
    _fit(trainer, module, datamodule, checkpoint if resume else None, experiment.name)
    train_seconds = time.perf_counter() - start

    probabilities, targets = _predict(trainer, module, datamodule)
    metrics = _metrics(config, experiment, layout, created, module, identity, probabilities, targets,
                       train_seconds, str(trainer.strategy.root_device), images, resume)
    _write_history(run_dir / "history.csv", module.history)
    _write_predictions(run_dir / "predictions.csv", images.val_samples, layout.class_codes, probabilities)
    results.write_json(run_dir / "metrics.json", metrics)
    return ExperimentResult(experiment.name, run_dir, False, metrics)


class FeatureExtractor(L.LightningModule):
    """Runs a frozen backbone over normalised images; used once per frozen experiment."""

    def __init__(self, backbone: nn.Module, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.backbone = backbone
        self.preprocessing = preprocessing

    def on_after_batch_transfer(self, batch: tuple[torch.Tensor, torch.Tensor],
                                dataloader_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        return self.preprocessing.normalize(x), y

    def predict_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int,
                     dataloader_idx: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        return self.backbone(x).float(), y


def extract_features(config: Config, backbone: nn.Module, images: MonkeyDataModule) -> FeatureDataModule:
    """One eval-mode pass of the frozen backbone over training and validation images.

    Training the head on these features for every epoch gives the same result as running
    the whole network every epoch, because a frozen backbone in eval mode computes the same
    features each time, and the loaders draw their order from their own generators.
    """
    trainer = L.Trainer(**_placement(config), logger=False, enable_checkpointing=False,
                        enable_model_summary=False)
    extractor = FeatureExtractor(backbone.eval(), images.preprocessing)
    train, val = trainer.predict(extractor, dataloaders=[images.unshuffled_train_dataloader(),
                                                         images.val_dataloader()])

    def stack(outputs: list[tuple[torch.Tensor, torch.Tensor]]) -> TensorDataset:
        return TensorDataset(torch.cat([f for f, _ in outputs]).cpu(), torch.cat([y for _, y in outputs]).cpu())

    return FeatureDataModule(stack(train), stack(val), config.training.batch_size, config.seed)


def _placement(config: Config) -> dict[str, Any]:
    """Where and how to compute, from the config's [trainer] section (passed through)."""
    tc = config.trainer
    return {"accelerator": tc.accelerator, "devices": tc.devices, "precision": tc.precision,
            "strategy": tc.strategy, "num_nodes": tc.num_nodes}


def _trainer(config: Config, run_dir: Path) -> L.Trainer:
    return L.Trainer(
        **_placement(config),
        max_epochs=config.training.epochs,
        default_root_dir=run_dir,
        logger=False,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        # Without a monitor, top-1 is the newest epoch: one file, overwritten each epoch.
        callbacks=[ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", save_top_k=1,
                                   enable_version_counter=False)],
    )


def _fit(trainer: L.Trainer, module: LitClassifier, datamodule: L.LightningDataModule,
         checkpoint: Path | None, name: str) -> None:
    """Run trainer.fit; Ctrl-C becomes a one-line error that says how to resume."""
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
    except SystemExit:
        if not trainer.interrupted:
            raise
        raise Interrupted(
            f"{name}: interrupted after {len(module.history)} finished epoch(s); "
            "run the same command again to resume from the last checkpoint"
        ) from None
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignores Ctrl-C after one
    if trainer.interrupted:
        raise Interrupted(f"{name}: training stopped early; rerun to resume from the last checkpoint")


def _predict(trainer: L.Trainer, module: LitClassifier,
             datamodule: L.LightningDataModule) -> tuple[torch.Tensor, torch.Tensor]:
    batches = trainer.predict(module, datamodule=datamodule)
    return torch.cat([p for p, _ in batches]), torch.cat([y for _, y in batches])


def _metrics(config: Config, experiment: ExperimentConfig, layout: DatasetLayout, created: Any,
             module: LitClassifier, identity: dict[str, str], probabilities: torch.Tensor,
             targets: torch.Tensor, train_seconds: float, device: str,
             images: MonkeyDataModule, resumed: bool) -> dict[str, Any]:
    n = len(layout.classes)
    preds = probabilities.argmax(dim=1)
    preprocessing = images.preprocessing
    total, trainable = count_parameters(created.model)
    arch = get_architecture(experiment.architecture)
    return {
        "schema": RESULTS_SCHEMA,
        "experiment": experiment.name,
        "title": experiment.label,
        "architecture": experiment.architecture,
        "architecture_title": arch.title,
        "frozen": experiment.frozen,
        "pretrained": experiment.pretrained,
        "weights": created.weights,
        "accuracy": float(multiclass_accuracy(preds, targets, n, average="micro")),
        "macro_f1": float(multiclass_f1_score(preds, targets, n, average="macro")),
        "confusion_matrix": multiclass_confusion_matrix(preds, targets, n).tolist(),
        "classes": layout.class_codes,
        "n_train": len(images.train_samples),
        "n_val": len(targets),
        "params_total": total,
        "params_trainable": trainable,
        "epochs": len(module.history),
        "train_seconds": round(train_seconds, 2),
        "resumed": resumed,
        "device": device,
        "seed": config.seed,
        "batch_size": config.training.batch_size,
        "learning_rate": config.training.learning_rate,
        "preprocessing": {"resize": preprocessing.resize, "crop": preprocessing.crop,
                          "mean": list(preprocessing.mean), "std": list(preprocessing.std)},
        "trainer": {"accelerator": config.trainer.accelerator, "precision": config.trainer.precision},
        **identity,
        "versions": library_versions(),
    }


def library_versions() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "timm": timm.__version__,
            "lightning": L.__version__, "torchmetrics": torchmetrics.__version__}


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    results.write_text(path, buffer.getvalue())


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    _write_csv(path, list(HISTORY_COLUMNS), [[row[c] for c in HISTORY_COLUMNS] for row in history])


def _write_predictions(path: Path, samples: list[Sample], codes: list[str],
                       probabilities: torch.Tensor) -> None:
    predicted = probabilities.argmax(dim=1).tolist()
    rows = [[sample.relpath, codes[sample.label], codes[p], *(f"{q:.6f}" for q in probs)]
            for sample, p, probs in zip(samples, predicted, probabilities.tolist())]
    _write_csv(path, ["file", "true_class", "predicted_class", *(f"prob_{c}" for c in codes)], rows)


@dataclass(frozen=True)
class ExperimentFailure:
    name: str
    reason: str

    def summary(self) -> str:
        return f"{self.name}: FAILED: {self.reason}"


def select_experiments(config: Config, only: list[str] | None) -> list[ExperimentConfig]:
    """The configured experiments, or those named in `only` (each must exist), checked
    against the model registry before anything runs."""
    for i, experiment in enumerate(config.experiments):
        if experiment.architecture not in list_architectures():
            raise MonkeyReportError(
                f"{config.source}: 'experiments[{i}].architecture' (experiment '{experiment.name}'): "
                f"unknown architecture '{experiment.architecture}' (known: {', '.join(list_architectures())})")
    if not only:
        return list(config.experiments)
    known = {e.name: e for e in config.experiments}
    unknown = [name for name in only if name not in known]
    if unknown:
        raise MonkeyReportError(f"--only: no experiment named '{unknown[0]}' in {config.source} "
                                f"(known: {', '.join(known)})")
    return [known[name] for name in only]


def train_all(config: Config, only: list[str] | None = None, force: bool = False,
              show_progress: bool = True) -> list[ExperimentResult | ExperimentFailure]:
    """Run the selected experiments in order. A failing one is reported and the rest go on;
    Ctrl-C stops them all."""
    experiments = select_experiments(config, only)
    layout = locate(resolve_data_root(config))
    entries = list_files(layout)
    fingerprint = fingerprint_dataset(layout, entries)
    records: list[ImageRecord] | None = None
    outcomes: list[ExperimentResult | ExperimentFailure] = []
    for experiment in experiments:
        if records is None and (force or not is_finished(config, experiment, fingerprint)):
            records = scan(layout, entries, config.data.max_image_pixels, config.eda.workers, show_progress)
        try:
            outcome = run_experiment(config, experiment, layout, records or [], fingerprint, force)
        except Interrupted:
            raise
        except MonkeyReportError as exc:
            outcome = ExperimentFailure(experiment.name, str(exc))
            results.write_json(config.runs_dir / experiment.name / "failed.json",
                               {"experiment": experiment.name, "reason": str(exc)})
        outcomes.append(outcome)
    return outcomes


def is_finished(config: Config, experiment: ExperimentConfig, fingerprint: str) -> bool:
    finished = results.read_json_if_exists(config.runs_dir / experiment.name / "metrics.json")
    return bool(finished and finished.get("config_hash") == experiment_hash(config, experiment)
                and finished.get("dataset_fingerprint") == fingerprint)
