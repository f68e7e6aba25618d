"""Training: run every selected experiment and leave its results in `runs/<experiment>/`.

`run_experiment` leaves the results contract there: metrics.json (written last: its presence
means the run finished), history.csv, predictions.csv and checkpoints/last.ckpt. Whether a
run is skipped, resumed or started afresh is decided first (run_plan.py); the module it
trains is lit_module.py, its recipe recipe.py, its epoch history a callback (history.py),
where and in which precision it computes placement.py.

Selection: with `selection = "last"` the model after the last epoch predicts the validation
split. With "holdout", part of the training images is held out (holdout.py) and validated on
every epoch; Lightning's ModelCheckpoint keeps the epoch with the best held-out accuracy
(checkpoints/best.ckpt, the earliest on a tie) beside last.ckpt, and after fit that
checkpoint predicts the validation split, once.

Several processes ([trainer] devices × num_nodes > 1, e.g. strategy "ddp"): Lightning starts
the others by running the same command line again, and every Trainer.fit/predict is a
collective that all processes enter in the same order. So:
- Lockstep: `train_all` plans every experiment (skip, resume, fresh start) before its first
  fit/predict. A process Lightning starts plans while rank 0 waits in that call, so both read
  the same files: rank 0 writes an experiment's results only after the collectives of its
  training, and its only earlier writes (a fresh start's clean-up, setting a damaged
  checkpoint aside) leave the plan as it was.
- Results: each process loads its share of the data (datamodule.make_loader); batches carry
  sample indices; predict_step all-gathers and `_in_sample_order` keeps each image once, so
  metrics.json, predictions.csv and the frozen-feature pass cover every image exactly once.
- Writes: only global rank 0 writes (`rank_zero_only`); the image cache is built in
  `prepare_data`. In the other processes `build` only trains and the CLI reports nothing.

Console: per experiment a progress line on a terminal and a result line; Lightning's own
output goes to runs/<experiment>/train.log (console.py).
"""

from __future__ import annotations

import logging
import platform
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import lightning as L
import numpy as np
import timm
import torch
import torchmetrics
import torchvision
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from torch import nn
from torch.utils.data import TensorDataset
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
)

from monkeyreport import fast_path, feature_cache, results
from monkeyreport.config import Config, ExperimentConfig, Run, resolve_data_root
from monkeyreport.console import ExperimentProgress, lightning_output_to, log, progress_line
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
from monkeyreport.fast_path import ComputeSetting
from monkeyreport.history import EpochHistory
from monkeyreport.holdout import holdout_split
from monkeyreport.lit_module import FeatureExtractor, LitClassifier
from monkeyreport.pipeline import Options, StageOutcome, timed
from monkeyreport.models import count_parameters, create, get_architecture, list_architectures
from monkeyreport.placement import (
    Placement,
    compute_setting,
    is_global_zero,
    resolve_placement,
    trainer_placement,
)
from monkeyreport.recipe import HeadFirst, train_augmentation
from monkeyreport.results import (
    CacheFiles,
    HeadRecord,
    History,
    Predictions,
    PreprocessingRecord,
    RunFailure,
    RunFiles,
    RunMetrics,
)
from monkeyreport.run_plan import Plan, plan_experiment, prepare_run_dir
from monkeyreport.work_queue import Group, WorkQueue, group_key


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
        chosen = m.get("selection") or {}
        how += (f", epoch {chosen['epoch']} chosen on {chosen['n_holdout']} held-out images"
                if chosen.get("mode") == "holdout" else "")
        state = ("unchanged, skipped" if self.skipped
                 else f"{m['epochs']} epochs in {m['train_seconds']:.1f} s on {m['device']}{how}")
        return (f"{self.name}: accuracy {m['accuracy']:.4f}, macro F1 {m['macro_f1']:.4f} "
                f"({state}) -> {self.run_dir}")


def run_experiment(config: Config, experiment: ExperimentConfig, layout: DatasetLayout,
                   records: list[ImageRecord], dataset_fingerprint: str,
                   force: bool = False, plan: Plan | None = None,
                   show_progress: bool = True, placement: Placement | None = None,
                   run_name: str | None = None) -> ExperimentResult:
    """Train and evaluate one run of an experiment, or reuse its finished results. `config` is
    the run's own (`Config.for_run`: its seed and recipe), `run_name` its folder (by default
    the experiment's name). `plan` defaults to one made now (`train_all` makes all of them
    first: see the module docstring), `placement` one resolved now. Lightning's output goes to
    its train.log, written by rank 0 like every result."""
    name = run_name or experiment.name
    placement = placement or resolve_placement(config)
    plan = plan or plan_experiment(config, experiment, dataset_fingerprint, placement.world_size, force, name)
    files = RunFiles.of(config.runs_dir, name)
    if plan.finished:
        return ExperimentResult(name, files.run_dir, True, RunMetrics.read(files.metrics).to_dict())
    prepare_run_dir(files, plan)
    writes = is_global_zero()
    with (lightning_output_to(files.log if writes else None),
          progress_line(name, show_progress and writes) as progress):
        log.info(f"{name}: {f'resuming from {files.checkpoint}' if plan.resume else 'fresh start'}")
        setting = compute_setting(config, experiment, len(layout.classes), placement,
                                  announce=show_progress and writes)
        return _train_and_evaluate(config, experiment, layout, records, dataset_fingerprint, plan, files,
                                   setting, progress)


def _train_and_evaluate(config: Config, experiment: ExperimentConfig, layout: DatasetLayout,
                        records: list[ImageRecord], dataset_fingerprint: str, plan: Plan, files: RunFiles,
                        setting: ComputeSetting, progress: ExperimentProgress | None) -> ExperimentResult:
    t = config.training
    on_features = t.trains_on_features(experiment.frozen)
    L.seed_everything(config.seed, workers=True, verbose=False)
    created = create(experiment.architecture, len(layout.classes), experiment.pretrained, experiment.frozen)
    if setting.channels_last:
        created.model.to(memory_format=torch.channels_last)
    preprocessing = Preprocessing(t.resize, t.crop, created.mean, created.std)
    train_samples = select_samples(layout, records, "training", t.max_images_per_class, config.seed)
    images = MonkeyDataModule(
        train_samples,
        select_samples(layout, records, "validation", t.max_images_per_class, config.seed),
        preprocessing, t.batch_size, t.num_workers, config.data.max_image_pixels,
        cache_dir=CacheFiles(config.runs_dir).folder if t.image_cache else None,
        dataset_fingerprint=dataset_fingerprint, seed=config.seed,
        predict_splits=("train", "val") if on_features else ("val",), channels_last=setting.channels_last,
        holdout=held_out_positions(config, records, train_samples) if t.selection == "holdout" else (),
        augment=train_augmentation(t.augment, t.crop, created.mean),
    )
    start = time.perf_counter()
    if on_features:
        datamodule: L.LightningDataModule = extract_features(config, experiment.architecture, created.model.backbone,
                                                             images, setting, progress)
        module = LitClassifier(created.model.head, len(layout.classes), t)
        precision = fast_path.FP32 if setting.chosen != "configured" else setting.precision
    else:
        datamodule = images
        module = LitClassifier(created.model, len(layout.classes), t)
        precision = setting.precision
    history = EpochHistory()
    head_first = not experiment.frozen and t.freeze_epochs > 0
    trainer = _trainer(config, files, precision, history, progress, head_first)
    if head_first and trainer.world_size > 1 and "find_unused_parameters_true" not in str(config.trainer.strategy):
        raise MonkeyReportError(f"{files.run_dir.name}: 'training.freeze_epochs' with several processes needs "
                                "[trainer] strategy = \"ddp_find_unused_parameters_true\" (the frozen backbone "
                                "has no gradients)")
    _fit(trainer, module, datamodule, files.checkpoint if plan.resume else None, files.run_dir.name, history)
    train_seconds = time.perf_counter() - start
    rows = list(history.rows)  # predicting from a checkpoint restores the callbacks' state of its epoch

    selection = {"mode": t.selection, "epoch": len(rows), "n_holdout": len(images.holdout),
                 "checkpoint": files.checkpoint.relative_to(files.run_dir).as_posix()}
    predict_from = None
    if t.selection == "holdout":
        predict_from = files.best_checkpoint
        best = torch.load(predict_from, map_location="cpu", weights_only=True, mmap=True)
        selection |= {"epoch": int(best["epoch"]) + 1,
                      "checkpoint": predict_from.relative_to(files.run_dir).as_posix()}
    probabilities, targets = _in_sample_order(
        trainer.predict(module, datamodule=datamodule, ckpt_path=predict_from, weights_only=True),
        len(images.val_samples))
    metrics = _metrics(config, experiment, layout, created, len(rows), plan.identity, probabilities,
                       targets, train_seconds, str(trainer.strategy.root_device), images, plan.resume, setting,
                       selection)
    _write_results(files, rows, images.val_samples, layout.class_codes, probabilities, metrics)
    return ExperimentResult(files.run_dir.name, files.run_dir, False, metrics.to_dict())


def held_out_positions(config: Config, records: list[ImageRecord], train: list[Sample]) -> list[int]:
    """Positions in `train` (the run's training samples) of the images `selection = "holdout"`
    validates on instead of training on: holdout.holdout_split over their records."""
    chosen = {s.relpath for s in train}
    held = set(holdout_split([r for r in records if r.relpath in chosen], config.training.holdout_fraction,
                             config.seed, config.eda.near_duplicate_distance))
    return [i for i, s in enumerate(train) if s.relpath in held]


def extract_features(config: Config, architecture: str, backbone: nn.Module, images: MonkeyDataModule,
                     setting: ComputeSetting, progress: ExperimentProgress | None = None) -> FeatureDataModule:
    """The frozen backbone's features of the training and validation images (the
    `predict_splits` of `images`), each image once, in sample order, in every process: read
    from the feature cache (feature_cache.py), or computed by one eval-mode pass and stored
    there by rank 0, so the other seeds and head recipes of the architecture read them.

    Training the head on these features for every epoch gives the same result as running
    the whole network every epoch, because a frozen backbone in eval mode computes the same
    features each time, and the loaders draw their order from their own generators.
    """
    trainer = L.Trainer(**trainer_placement(config, setting.precision), logger=False, enable_checkpointing=False,
                        enable_model_summary=False, enable_progress_bar=progress is not None,
                        callbacks=[progress] if progress else [])
    sizes = {"train": len(images.train_samples), "val": len(images.val_samples)}
    splits = {"train": images.train_samples, "val": images.val_samples}
    compute = {"device": _device_name(trainer.strategy.root_device), "precision": setting.precision,
               "memory_format": setting.memory_format, "batch_size": images.batch_size,
               "processes": trainer.world_size}
    description = feature_cache.describe(architecture, backbone, images.dataset_fingerprint, splits,
                                         images.preprocessing, images.max_pixels, compute)
    labels = {split: torch.tensor([s.label for s in samples], dtype=torch.int64) for split, samples in splits.items()}

    def feature_pass() -> feature_cache.Features:
        batches = trainer.predict(FeatureExtractor(backbone.eval()), datamodule=images)
        rows = {split: _in_sample_order(b, sizes[split]) for split, b in zip(images.predict_splits, batches)}
        return feature_cache.Features({s: r[0] for s, r in rows.items()}, {s: r[1] for s, r in rows.items()})

    def agree(found: bool) -> bool:
        """Whether every process found the features (else all compute them, together)."""
        if trainer.world_size == 1:
            return found
        # Lightning starts the other processes in the first collective: before it, all compute.
        return torch.distributed.is_initialized() and trainer.strategy.reduce_boolean_decision(found, all=True)

    features = feature_cache.cached_features(
        feature_cache.feature_path(CacheFiles(config.runs_dir).features, description), description, labels,
        feature_pass, writer=is_global_zero(), agree=agree)

    def dataset(split: str) -> TensorDataset:
        return TensorDataset(features.features[split], features.labels[split], torch.arange(sizes[split]))

    return FeatureDataModule(dataset("train"), dataset("val"), config.training.batch_size, config.seed,
                             images.holdout)


def _device_name(device: torch.device) -> str:
    """The device a pass runs on, down to the processor or GPU model (their results may differ)."""
    if device.type == "cuda":
        return f"cuda {torch.cuda.get_device_name(device)}"
    return f"cpu {fast_path.cpu_model()}" if device.type == "cpu" else device.type


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


def _trainer(config: Config, files: RunFiles, precision: str, history: EpochHistory,
             progress: ExperimentProgress | None = None, head_first: bool = False) -> L.Trainer:
    # Without a monitor, top-1 is the newest epoch: one file, overwritten each epoch.
    checkpoints: list[Callback] = [ModelCheckpoint(dirpath=files.checkpoint.parent, filename=files.checkpoint.stem,
                                                   save_top_k=1, enable_version_counter=False)]
    if config.training.selection == "holdout":  # the best held-out accuracy; the earliest epoch on a tie
        checkpoints.append(ModelCheckpoint(dirpath=files.best_checkpoint.parent, filename=files.best_checkpoint.stem,
                                           monitor="val_accuracy", mode="max", save_top_k=1,
                                           enable_version_counter=False))
    recipe = [HeadFirst(config.training.freeze_epochs)] if head_first else []
    return L.Trainer(
        **trainer_placement(config, precision),
        max_epochs=config.training.epochs,
        default_root_dir=files.run_dir,
        logger=False,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        # Without the experiment's progress line, no bar at all: Lightning would add its own.
        enable_progress_bar=progress is not None,
        callbacks=[*recipe, history, *checkpoints, *([progress] if progress else [])],
    )


def _fit(trainer: L.Trainer, module: LitClassifier, datamodule: L.LightningDataModule,
         checkpoint: Path | None, name: str, history: EpochHistory) -> None:
    """Run trainer.fit; Ctrl-C becomes a one-line error that says how to resume."""
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
    except SystemExit:
        if not trainer.interrupted:
            raise
        raise Interrupted(
            f"{name}: interrupted after {len(history.rows)} finished epoch(s); "
            "run the same command again to resume from the last checkpoint"
        ) from None
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignores Ctrl-C after one
    if trainer.interrupted:
        raise Interrupted(f"{name}: training stopped early; rerun to resume from the last checkpoint")


def _metrics(config: Config, experiment: ExperimentConfig, layout: DatasetLayout, created: Any,
             epochs: int, identity: dict[str, Any], probabilities: torch.Tensor,
             targets: torch.Tensor, train_seconds: float, device: str,
             images: MonkeyDataModule, resumed: bool, setting: ComputeSetting,
             selection: dict[str, Any]) -> RunMetrics:
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
        n_train=len(images.train_samples) - len(images.holdout),
        n_val=len(targets),
        params_total=total,
        params_trainable=trainable,
        params_head=count_parameters(head)[0],
        head=HeadRecord(in_features=head[0].in_features, hidden=arch.head_hidden,
                        dropout=arch.head_dropout, outputs=n),
        epochs=epochs,
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
        selection=selection,
        recipe=config.training.recipe_changes(),
        **identity,
    )


def library_versions() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "timm": timm.__version__,
            "lightning": L.__version__, "torchmetrics": torchmetrics.__version__}


@rank_zero_only
def _write_results(files: RunFiles, history: list[dict[str, float]], samples: list[Sample],
                   codes: list[str], probabilities: torch.Tensor, metrics: RunMetrics) -> None:
    History(history).write(files.history)
    Predictions([s.relpath for s in samples], codes, np.array([s.label for s in samples], dtype=np.int64),
                probabilities.argmax(dim=1).numpy(), probabilities.numpy()).write(files.predictions)
    results.write_json(files.metrics, metrics.to_dict())  # last: it marks the run finished


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


@dataclass(frozen=True)
class ExperimentHeld:
    """A run another worker of the runs folder is training (work_queue.py)."""

    name: str

    def summary(self) -> str:
        return f"{self.name}: being trained by another worker"


def train_all(config: Config, only: list[str] | None = None, force: bool = False,
              show_progress: bool = True, echo: Callable[[str], None] | None = None,
              since: float | None = None) -> list[ExperimentResult | ExperimentFailure | ExperimentHeld]:
    """Train every seed of the selected experiments (`Config.runs`) as one worker of the runs
    folder's queue (work_queue.py): each run that no other worker holds, in order, until
    every one left is held by another. A failing run is reported and the rest go on; Ctrl-C
    stops them all. Rank 0 passes each one's result line to `echo` as soon as it is known.
    Outcomes come in config order: results, failures, and runs held by other workers. A run
    that another worker tried and failed after `since` (by default now) is not tried again."""
    experiments = select_experiments(config, only)
    runs = [run for run in config.runs if run.experiment in experiments]
    worker = Worker(config, resolve_placement(config), force, show_progress, since or time.time())
    if not is_global_zero():
        return worker.follow(runs)
    return worker.take(runs, echo)


class Worker:
    """One worker of the queue: global rank 0 claims runs, the other ranks of its group follow."""

    def __init__(self, config: Config, placement: Placement, force: bool, show_progress: bool,
                 since: float) -> None:
        self.config = config
        self.placement = placement
        self.force = force
        self.show_progress = show_progress
        self.layout = locate(resolve_data_root(config))
        self.entries = list_files(self.layout)
        self.fingerprint = fingerprint_dataset(self.layout, self.entries)
        self.queue = WorkQueue(config.runs_dir, since)
        self.group = Group(self.queue, group_key()) if placement.world_size > 1 else None
        self._records: list[ImageRecord] | None = None
        self._published: list[str] = []  # the runs rank 0 of a group trains, in order

    def records(self) -> list[ImageRecord]:
        """The dataset's scan, made when the first run needs training."""
        if self._records is None:
            self._records = scan(self.layout, self.entries, self.config.data.max_image_pixels,
                                 self.config.eda.workers, self.show_progress and is_global_zero())
        return self._records

    def take(self, runs: list[Run], echo: Callable[[str], None] | None
             ) -> list[ExperimentResult | ExperimentFailure | ExperimentHeld]:
        """Claim and train runs until each one is done or held by another worker."""
        done: dict[str, ExperimentResult | ExperimentFailure] = {}
        pending = list(runs)
        if self.group:
            self.group.publish([], done=False)
        try:
            while pending:
                claimed = False
                for run in list(pending):
                    with self.queue.claim(run.name) as held:
                        if not held:
                            continue
                        done[run.name] = self.attempt(run)
                    claimed = True
                    pending.remove(run)
                    if echo:
                        echo(done[run.name].summary())
                if not claimed:
                    break
        finally:
            if self.group:
                self.group.publish(self._published, done=True)
        return [done.get(run.name) or ExperimentHeld(run.name) for run in runs]

    def attempt(self, run: Run) -> ExperimentResult | ExperimentFailure:
        """Train one run, or reuse it; in rank 0 while holding its claim."""
        config = self.config.for_run(run)
        files = RunFiles.of(config.runs_dir, run.name)
        if is_global_zero() and self.queue.written_since_start(files.failed):
            return ExperimentFailure(run.name, RunFailure.read(files.failed).reason)  # another worker's try
        # --force retrains what was there before this worker started, not what another finished since.
        force = self.force and not self.queue.written_since_start(files.metrics)
        plan = plan_experiment(config, run.experiment, self.fingerprint, self.placement.world_size, force,
                               run.name)
        if self.group and is_global_zero() and not plan.finished:
            self._published = [*self._published, run.name]
            self.group.publish(self._published, done=False)
        try:
            return run_experiment(config, run.experiment, self.layout, self.records() if not plan.finished else [],
                                  self.fingerprint, force, plan, self.show_progress, self.placement, run.name)
        except Interrupted:
            raise
        except MonkeyReportError as exc:
            failure = ExperimentFailure(run.name, str(exc))
            _record_failure(files, run.experiment.name, failure)
            return failure

    def follow(self, runs: list[Run]) -> list[ExperimentResult | ExperimentFailure | ExperimentHeld]:
        """Another rank of a group: train the runs its rank 0 publishes, in its order."""
        by_name = {run.name: run for run in runs}
        assert self.group is not None  # only a process of several has another rank
        return [self.attempt(by_name[name]) for name in self.group.follow()]


@rank_zero_only
def _record_failure(files: RunFiles, experiment: str, failure: ExperimentFailure) -> None:
    RunFailure(experiment, failure.reason).write(files.failed)


def run_stage(config: Config, options: Options) -> StageOutcome:
    """The pipeline's train stage: every configured run, finished ones reused. With a failed
    run the stage is incomplete, so the next build tries it again; with runs that other
    workers hold it stops the build here: the worker that finishes last goes on."""
    start = time.perf_counter()
    ran = train_all(config, force=options.force, show_progress=options.show_progress,
                    echo=lambda line: options.echo(f"train: {line}"), since=options.started)
    failed = [r.name for r in ran if isinstance(r, ExperimentFailure)]
    held = [r.name for r in ran if isinstance(r, ExperimentHeld)]
    reused = sum(1 for r in ran if isinstance(r, ExperimentResult) and r.skipped)
    trained = len(ran) - reused - len(failed) - len(held)
    line = (f"train {timed(start)}: {len(ran)} run(s), {reused} unchanged, {trained} trained, "
            f"{len(failed)} failed")
    if held:
        return StageOutcome(f"{line}, {len(held)} held by other workers ({', '.join(held)}): the worker "
                            "that finishes last goes on", complete=False, failed=failed,
                            reason=f"held by other workers: {', '.join(held)}", stop=True)
    return StageOutcome(f"{line} -> {config.runs_dir}", complete=not failed, failed=failed,
                        reason=f"failed: {', '.join(failed)}" if failed else "")
