"""Training: the LightningModule, the Trainer built from config, and `run_experiment`.

`run_experiment` leaves the results contract in `runs/<experiment>/`:
metrics.json (written last: its presence means the run finished), history.csv,
predictions.csv and checkpoints/last.ckpt. A run whose identity (config hash, dataset
fingerprint, world size) matches a finished one is skipped; an unfinished one resumes from
its last checkpoint.

Several processes ([trainer] devices × num_nodes > 1, e.g. strategy "ddp"): Lightning starts
the others by running the same command line again, and every Trainer.fit/predict is a
collective that all processes enter in the same order. So:
- Lockstep: `train_all` plans every experiment (skip, resume, fresh start) before its first
  fit/predict. A process Lightning starts plans while rank 0 waits in that call, so both read
  the same files: rank 0 writes an experiment's results only after the collectives of its
  training, and its only earlier writes (a fresh start's clean-up) leave the plan as it was.
- Results: each process loads its share of the data (datamodule.make_loader); batches carry
  sample indices; predict_step all-gathers and `_in_sample_order` keeps each image once, so
  metrics.json, predictions.csv and the frozen-feature pass cover every image exactly once.
- Writes: only global rank 0 writes (`rank_zero_only`); the image cache is built in
  `prepare_data`. In the other processes `build` only trains and the CLI reports nothing.
- A damaged checkpoint (a full disk, a copy cut short) is found while planning
  (`checkpoint_problem`): rank 0 moves it aside and the run starts afresh. Every process
  decides the same: one that plans after the move finds no checkpoint, one that plans before
  it (another node) finds the same damage.

Compute: each experiment's network pass (training, or a frozen run's feature pass) runs in
the memory format and precision `compute_setting` picks: on a CPU, channels-last and the
faster of fp32 and bf16 autocast measured for the architecture (fast_path.py).

Console: per experiment a progress line on a terminal and a result line; Lightning's own
output goes to runs/<experiment>/train.log (console.py).
"""

from __future__ import annotations

import csv
import io
import logging
import pickle
import platform
import shutil
import signal
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import lightning as L
import timm
import torch
import torchmetrics
import torchvision
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from torch import nn
from torch.utils.data import TensorDataset
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
)

from monkeyreport import fast_path, results
from monkeyreport.fast_path import ComputeSetting
from monkeyreport.results import (HISTORY_COLUMNS, RESULTS_SCHEMA, HeadRecord, PreprocessingRecord, RunFiles,
                                  RunMetrics)
from monkeyreport.config import Config, ExperimentConfig, resolve_data_root, stable_hash
from monkeyreport.console import ExperimentProgress, lightning_output_to, log, notice, progress_line
from monkeyreport.data import DatasetLayout, ImageRecord, list_files, locate, scan
from monkeyreport.data import fingerprint as fingerprint_dataset
from monkeyreport.datamodule import (
    Batch,
    FeatureDataModule,
    MonkeyDataModule,
    Preprocessing,
    Sample,
    select_samples,
)
from monkeyreport.errors import MonkeyReportError
from monkeyreport.models import count_parameters, create, get_architecture, list_architectures


# A frozen backbone is in eval mode on purpose; Lightning warns about that at every fit.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
# Lightning's own use of torch APIs deprecated in recent torch releases; nothing to act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_gather is deprecated")
# Lightning advertises a cloud logger at every Trainer; this toolkit logs to CSV on disk.
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: "litlogger" not in record.getMessage())


class Interrupted(MonkeyReportError):
    """The user stopped training (Ctrl-C); finished epochs are kept in the checkpoint."""


class LitClassifier(L.LightningModule):
    """Cross-entropy training with Adam; validation accuracy and macro F1 per epoch.

    With several processes, each validates its own share of the images, each image in exactly
    one process (the "each_once" loader), and the metrics reduce their states over all
    processes when computed: history.csv counts every validation image once.
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
        self.history: list[dict[str, float]] = []
        self._epoch_start = 0.0

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        x, y, _ = batch
        loss = self.loss(self(x), y)
        self.train_loss.update(loss.detach(), weight=len(y))
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        x, y, _ = batch
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
        # Already reduced over all processes; sync_dist only tells Lightning so.
        self.log_dict({"val_accuracy": row["val_accuracy"], "val_f1": row["val_macro_f1"]}, prog_bar=True,
                      sync_dist=True)

    def predict_step(self, batch: Batch, batch_idx: int) -> Batch:
        """Softmax probabilities, labels and sample indices of this batch in every process."""
        x, y, index = batch
        return self.all_gather((torch.softmax(self(x).float(), dim=1), y, index))

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
        compute = m.get("compute") or {}
        how = f", {fast_path.setting_name(compute['memory_format'], compute['precision'])}" if compute else ""
        state = ("unchanged, skipped" if self.skipped
                 else f"{m['epochs']} epochs in {m['train_seconds']:.1f} s on {m['device']}{how}")
        return (f"{self.name}: accuracy {m['accuracy']:.4f}, macro F1 {m['macro_f1']:.4f} "
                f"({state}) -> {self.run_dir}")


@dataclass(frozen=True)
class Plan:
    """What to do with one experiment, decided from the files on disk before training starts."""

    identity: dict[str, Any]  # what identifies its results: recorded in metrics.json
    started: dict[str, Any]  # identity and what the checkpoint holds: recorded in run.json
    finished: bool  # reuse metrics.json
    resume: bool  # continue from checkpoints/last.ckpt


def experiment_hash(config: Config, experiment: ExperimentConfig) -> str:
    """Everything in the config that changes an experiment's numbers (not where or how fast
    it runs; the number of processes, which does, is in the identity beside it). Precision
    and memory format count as configured: what "auto" picks on this machine is recorded in
    metrics.json, like the device, so a finished run is not redone to measure again."""
    t = config.training
    return stable_hash(RESULTS_SCHEMA, experiment, config.seed, t.epochs, t.batch_size,
                       t.learning_rate, t.resize, t.crop, t.max_images_per_class,
                       config.trainer.precision, config.trainer.memory_format)


def plan_experiment(config: Config, experiment: ExperimentConfig, dataset_fingerprint: str,
                    world_size: int, force: bool = False) -> Plan:
    """The plan for `experiment`, from the files in its run folder."""
    files = RunFiles.of(config.runs_dir, experiment.name)
    identity = {"config_hash": experiment_hash(config, experiment),
                "dataset_fingerprint": dataset_fingerprint, "world_size": world_size}
    # The checkpoint of a run on cached features holds the head alone.
    started = identity | {"trains_on_features": experiment.frozen and config.training.feature_cache}
    finished = not force and _matches(results.read_json_if_exists(files.metrics), identity)
    resume = (not force and not finished and files.checkpoint.is_file()
              and results.read_json_if_exists(files.started) == started
              and _usable_checkpoint(files, experiment.name))
    return Plan(identity, started, finished, resume)


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


def run_experiment(config: Config, experiment: ExperimentConfig, layout: DatasetLayout,
                   records: list[ImageRecord], dataset_fingerprint: str,
                   force: bool = False, plan: Plan | None = None,
                   show_progress: bool = True, placement: Placement | None = None) -> ExperimentResult:
    """Train and evaluate one experiment, or reuse its finished results. `plan` defaults to
    one made now (`train_all` makes all of them first: see the module docstring), `placement`
    one resolved now. Lightning's
    output goes to its train.log, written by rank 0 like every result."""
    placement = placement or resolve_placement(config)
    plan = plan or plan_experiment(config, experiment, dataset_fingerprint, placement.world_size, force)
    files = RunFiles.of(config.runs_dir, experiment.name)
    if plan.finished:
        return ExperimentResult(experiment.name, files.run_dir, True, results.read_json(files.metrics))
    _prepare_run_dir(files, plan)
    writes = is_global_zero()
    with (lightning_output_to(files.log if writes else None),
          progress_line(experiment.name, show_progress and writes) as progress):
        log.info(f"{experiment.name}: {f'resuming from {files.checkpoint}' if plan.resume else 'fresh start'}")
        setting = compute_setting(config, experiment, len(layout.classes), placement,
                                  announce=show_progress and writes)
        return _train_and_evaluate(config, experiment, layout, records, dataset_fingerprint, plan, files,
                                   setting, progress)


@dataclass(frozen=True)
class Placement:
    """Where the runs compute, as Lightning resolves `[trainer]` and the launch environment."""

    world_size: int  # processes training together; it multiplies the effective batch
    device_type: str  # "cpu", "cuda", "mps", ...


def compute_setting(config: Config, experiment: ExperimentConfig, num_classes: int, placement: Placement,
                    announce: bool = False) -> ComputeSetting:
    """Memory format and precision of the experiment's network pass: its training steps, or
    for a frozen run on features the feature pass (the head on features trains in fp32).
    A choice measured just now is announced when `announce`."""
    t = config.training
    kind: fast_path.Pass = "features" if experiment.frozen and t.feature_cache else "training"

    def measure(precision: str) -> float:
        with torch.random.fork_rng():  # a throwaway model: the run's random stream stays as it was
            model = create(experiment.architecture, num_classes, "none", experiment.frozen).model
            return fast_path.seconds_per_step(model.backbone if kind == "features" else model, kind,
                                              t.batch_size, t.crop, num_classes, precision)

    key = fast_path.pass_key(experiment.architecture, kind, experiment.frozen, t.batch_size, t.crop)
    setting, measured = fast_path.choose(config.trainer.precision, config.trainer.memory_format,
                                         placement.device_type, placement.world_size, measure,
                                         config.runs_dir / "cache" / fast_path.CACHE_NAME, key)
    if measured and announce:
        timings = ", ".join(f"{p} {s:.2f} s" for p, s in setting.seconds_per_step.items())
        notice(f"{experiment.architecture} ({kind}) on this CPU: {timings} per step -> {setting.describe()}")
    return setting


def _train_and_evaluate(config: Config, experiment: ExperimentConfig, layout: DatasetLayout,
                        records: list[ImageRecord], dataset_fingerprint: str, plan: Plan, files: RunFiles,
                        setting: ComputeSetting, progress: ExperimentProgress | None) -> ExperimentResult:
    t = config.training
    on_features = experiment.frozen and t.feature_cache
    L.seed_everything(config.seed, workers=True, verbose=False)
    created = create(experiment.architecture, len(layout.classes), experiment.pretrained, experiment.frozen)
    if setting.channels_last:
        created.model.to(memory_format=torch.channels_last)
    preprocessing = Preprocessing(t.resize, t.crop, created.mean, created.std)
    images = MonkeyDataModule(
        select_samples(layout, records, "training", t.max_images_per_class, config.seed),
        select_samples(layout, records, "validation", t.max_images_per_class, config.seed),
        preprocessing, t.batch_size, t.num_workers, config.data.max_image_pixels,
        cache_dir=config.runs_dir / "cache" if t.image_cache else None,
        dataset_fingerprint=dataset_fingerprint, seed=config.seed,
        predict_splits=("train", "val") if on_features else ("val",), channels_last=setting.channels_last,
    )
    start = time.perf_counter()
    if on_features:
        datamodule: L.LightningDataModule = extract_features(config, created.model.backbone, images, setting,
                                                             progress)
        module = LitClassifier(created.model.head, len(layout.classes), t.learning_rate)
        head_precision = fast_path.FP32 if setting.chosen != "configured" else setting.precision
        trainer = _trainer(config, files, head_precision, progress)
    else:
        datamodule = images
        module = LitClassifier(created.model, len(layout.classes), t.learning_rate)
        trainer = _trainer(config, files, setting.precision, progress)
    _fit(trainer, module, datamodule, files.checkpoint if plan.resume else None, experiment.name)
    train_seconds = time.perf_counter() - start

    probabilities, targets = _in_sample_order(trainer.predict(module, datamodule=datamodule),
                                              len(images.val_samples))
    metrics = _metrics(config, experiment, layout, created, module, plan.identity, probabilities, targets,
                       train_seconds, str(trainer.strategy.root_device), images, plan.resume, setting)
    _write_results(files, module.history, images.val_samples, layout.class_codes, probabilities, metrics)
    return ExperimentResult(experiment.name, files.run_dir, False, metrics.to_dict())


@rank_zero_only
def _prepare_run_dir(files: RunFiles, plan: Plan) -> None:
    """Forget an earlier failure; on a fresh start also the checkpoint and results of an
    earlier run (none may sit beside the new ones), and record what this run starts from."""
    files.failed.unlink(missing_ok=True)
    if plan.resume:
        return
    shutil.rmtree(files.checkpoint.parent, ignore_errors=True)
    for path in files.results:
        path.unlink(missing_ok=True)
    results.write_json(files.started, plan.started)


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


def extract_features(config: Config, backbone: nn.Module, images: MonkeyDataModule, setting: ComputeSetting,
                     progress: ExperimentProgress | None = None) -> FeatureDataModule:
    """One eval-mode pass of the frozen backbone over training and validation images (the
    `predict_splits` of `images`), each image once, in sample order, in every process.

    Training the head on these features for every epoch gives the same result as running
    the whole network every epoch, because a frozen backbone in eval mode computes the same
    features each time, and the loaders draw their order from their own generators.
    """
    trainer = L.Trainer(**_placement(config, setting.precision), logger=False, enable_checkpointing=False,
                        enable_model_summary=False, enable_progress_bar=progress is not None,
                        callbacks=[progress] if progress else [])
    train, val = trainer.predict(FeatureExtractor(backbone.eval()), datamodule=images)

    def dataset(batches: list[Batch], size: int) -> TensorDataset:
        return TensorDataset(*_in_sample_order(batches, size), torch.arange(size))

    return FeatureDataModule(dataset(train, len(images.train_samples)), dataset(val, len(images.val_samples)),
                             config.training.batch_size, config.seed)


def _in_sample_order(batches: list[Batch], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs and labels of samples 0..size-1, one row each, from predict_step's gathered batches.

    A gathered tensor has a leading process dimension when there are several processes. The
    "padded" loaders repeat a few samples so that every process runs the same number of
    steps: each sample index is kept once.
    """
    def rows(position: int) -> torch.Tensor:
        return torch.cat([b[position].flatten(0, b[2].dim() - 1) for b in batches]).cpu()

    outputs, labels, index = rows(0), rows(1), rows(2)
    index, order = torch.sort(index, stable=True)
    first = torch.ones_like(index, dtype=torch.bool)
    first[1:] = index[1:] != index[:-1]
    if not torch.equal(index[first], torch.arange(size)):
        raise RuntimeError(f"predictions cover {int(first.sum())} distinct samples, expected {size}")
    keep = order[first]
    return outputs[keep], labels[keep]


def _placement(config: Config, precision: str = fast_path.FP32) -> dict[str, Any]:
    """Where and how to compute: the config's [trainer] section (passed through), with the
    precision resolved (`compute_setting`)."""
    tc = config.trainer
    return {"accelerator": tc.accelerator, "devices": tc.devices, "precision": precision,
            "strategy": tc.strategy, "num_nodes": tc.num_nodes}


def resolve_placement(config: Config) -> Placement:
    """Processes and device type as Lightning resolves `[trainer]` and the launch environment.
    Building the Trainer also gives this process its global rank for `rank_zero_only`. Its
    device banner goes nowhere: every experiment's log has the same."""
    with lightning_output_to(None):
        trainer = L.Trainer(**_placement(config), logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False)
    return Placement(trainer.world_size, trainer.strategy.root_device.type)


def is_global_zero() -> bool:
    """Whether this is global rank 0, the process that writes and reports. Lightning takes the
    rank from the launch environment until a Trainer is built (a process it started to
    share the training has LOCAL_RANK > 0), then from the Trainer."""
    return rank_zero_only.rank == 0


def _trainer(config: Config, files: RunFiles, precision: str,
             progress: ExperimentProgress | None = None) -> L.Trainer:
    # Without a monitor, top-1 is the newest epoch: one file, overwritten each epoch.
    checkpoint = ModelCheckpoint(dirpath=files.checkpoint.parent, filename=files.checkpoint.stem, save_top_k=1,
                                 enable_version_counter=False)
    return L.Trainer(
        **_placement(config, precision),
        max_epochs=config.training.epochs,
        default_root_dir=files.run_dir,
        logger=False,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        # Without the experiment's progress line, no bar at all: Lightning would add its own.
        enable_progress_bar=progress is not None,
        callbacks=[checkpoint, *([progress] if progress else [])],
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


def _metrics(config: Config, experiment: ExperimentConfig, layout: DatasetLayout, created: Any,
             module: LitClassifier, identity: dict[str, Any], probabilities: torch.Tensor,
             targets: torch.Tensor, train_seconds: float, device: str,
             images: MonkeyDataModule, resumed: bool, setting: ComputeSetting) -> RunMetrics:
    n = len(layout.classes)
    preds = probabilities.argmax(dim=1)
    preprocessing = images.preprocessing
    total, trainable = count_parameters(created.model)
    arch = get_architecture(experiment.architecture)
    head = created.model.head
    return RunMetrics(
        experiment=experiment.name,
        title=experiment.label,
        architecture=experiment.architecture,
        architecture_title=arch.title,
        frozen=experiment.frozen,
        pretrained=experiment.pretrained,
        weights=created.weights,
        accuracy=float(multiclass_accuracy(preds, targets, n, average="micro")),
        macro_f1=float(multiclass_f1_score(preds, targets, n, average="macro")),
        confusion_matrix=multiclass_confusion_matrix(preds, targets, n).tolist(),
        classes=layout.class_codes,
        n_train=len(images.train_samples),
        n_val=len(targets),
        params_total=total,
        params_trainable=trainable,
        params_head=count_parameters(head)[0],
        head=HeadRecord(in_features=head[0].in_features, hidden=arch.head_hidden,
                        dropout=arch.head_dropout, outputs=n),
        epochs=len(module.history),
        train_seconds=round(train_seconds, 2),
        resumed=resumed,
        device=device,
        seed=config.seed,
        batch_size=config.training.batch_size,
        learning_rate=config.training.learning_rate,
        preprocessing=PreprocessingRecord(preprocessing.resize, preprocessing.crop,
                                          tuple(preprocessing.mean), tuple(preprocessing.std)),
        trainer={"accelerator": config.trainer.accelerator, "precision": config.trainer.precision,
                 "memory_format": config.trainer.memory_format},
        compute=setting.to_record(),
        versions=library_versions(),
        **identity,
    )


def library_versions() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "timm": timm.__version__,
            "lightning": L.__version__, "torchmetrics": torchmetrics.__version__}


@rank_zero_only
def _write_results(files: RunFiles, history: list[dict[str, float]], samples: list[Sample],
                   codes: list[str], probabilities: torch.Tensor, metrics: RunMetrics) -> None:
    _write_history(files.history, history)
    _write_predictions(files.predictions, samples, codes, probabilities)
    results.write_json(files.metrics, metrics.to_dict())  # last: it marks the run finished


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
              show_progress: bool = True, echo: Callable[[str], None] | None = None,
              ) -> list[ExperimentResult | ExperimentFailure]:
    """Run the selected experiments in order. A failing one is reported and the rest go on;
    Ctrl-C stops them all. Every experiment is planned before the first one trains (see the
    module docstring). Rank 0 passes each one's result line to `echo` as soon as it is known."""
    experiments = select_experiments(config, only)
    placement = resolve_placement(config)
    layout = locate(resolve_data_root(config))
    entries = list_files(layout)
    fingerprint = fingerprint_dataset(layout, entries)
    plans = [plan_experiment(config, e, fingerprint, placement.world_size, force) for e in experiments]
    records: list[ImageRecord] = []
    if not all(plan.finished for plan in plans):
        records = scan(layout, entries, config.data.max_image_pixels, config.eda.workers,
                       show_progress and is_global_zero())
    outcomes: list[ExperimentResult | ExperimentFailure] = []
    for experiment, plan in zip(experiments, plans):
        try:
            outcome = run_experiment(config, experiment, layout, records, fingerprint, force, plan,
                                     show_progress, placement)
        except Interrupted:
            raise
        except MonkeyReportError as exc:
            outcome = ExperimentFailure(experiment.name, str(exc))
            _record_failure(RunFiles.of(config.runs_dir, experiment.name), outcome)
        outcomes.append(outcome)
        if echo and is_global_zero():
            echo(outcome.summary())
    return outcomes


@rank_zero_only
def _record_failure(files: RunFiles, failure: ExperimentFailure) -> None:
    results.write_json(files.failed, {"experiment": failure.name, "reason": failure.reason})


def _matches(finished: dict[str, Any] | None, identity: dict[str, Any]) -> bool:
    """Whether a metrics.json belongs to a run with this identity. One written before
    `world_size` was recorded counts as one process."""
    if not finished:
        return False
    recorded = {"world_size": 1} | finished
    return all(recorded.get(key) == value for key, value in identity.items())
