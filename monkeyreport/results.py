"""Results on disk: the contract between stages, atomic writes and the readers every stage shares.

The second half of this module owns the contract: the paths of runs/<experiment>/ and
report/ (`RunFiles`, `ReportFiles`) and the typed records in them, each with its reader and
writer: `RunMetrics`, `Predictions`, `History`, `RunStart`, `RunFailure` under runs/, and the
JSON records under report/ (`EdaSummary`, `ModelSummary`, `Statistics`, `Interpretation`,
`FiguresManifest`, read and checked by `JsonRecord`). It is torch-free, so render and the
statistics read results without torch.

Every output goes to a temporary file in the destination folder and is renamed into place,
so an interrupted run leaves either the previous complete file or the new complete file.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import io
import json
import os
import tempfile
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Self

import numpy as np

from monkeyreport.errors import MonkeyReportError

# Version of runs/<experiment>/ results. Bump it when a code change alters what training
# produces for the same config: finished results of an older version are then retrained.
RESULTS_SCHEMA = 3  # 3: training accuracy per epoch in history.csv
# Version of report/models/<architecture>.json; an older summary is written again.
SUMMARY_SCHEMA = 3  # 3: backbone/head parameters, FLOPs and CPU latency per image
# Versions of what the other stages write (pipeline.py): a stage whose version changed runs again.
EDA_SCHEMA = 5  # 5: figures at print size, their words from figures.toml; 4: copies inside validation
STATS_SCHEMA = 5  # 5: validation copies counted once, accuracy on leaked images; 4: calibration (ECE) per run
INTERPRET_SCHEMA = 6  # 6: figures at print size, their words from figures.toml; 5: Grad-CAM facts
FIGURES_SCHEMA = 8  # 8: drawn at print size, their words from figures.toml; 7: training accuracy
RENDER_SCHEMA = 1


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` if the block succeeds."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise MonkeyReportError(f"{path.parent}: cannot write output ({exc.strerror})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs get ordinary permissions
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise MonkeyReportError(f"{path}: cannot write output ({exc.strerror})") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    """Read a results file; a corrupt one is a one-line error naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise MonkeyReportError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None


def read_json_if_exists(path: Path) -> Any | None:
    return read_json(path) if path.is_file() else None


def files_digest(paths: Iterable[Path], *parts: bytes) -> str:
    """A digest of `parts` and of each path with its bytes (a missing file counts by name):
    equal digests, equal inputs. Stages that skip unchanged work compare it with a stored one."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    for path in paths:
        h.update(str(path).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- the contract
# Where each result lives and what it holds. Training writes these files, every other stage
# reads them through the paths and records below; nothing else spells a result file name.


@dataclass(frozen=True)
class RunFiles:
    """The files of one experiment under runs/<experiment>/."""

    run_dir: Path

    @classmethod
    def of(cls, runs_dir: Path, experiment: str) -> "RunFiles":
        return cls(runs_dir / experiment)

    @property
    def metrics(self) -> Path:
        """RunMetrics as JSON, written last: its presence means the run finished."""
        return self.run_dir / "metrics.json"

    @property
    def history(self) -> Path:
        """One row per finished epoch, columns HISTORY_COLUMNS."""
        return self.run_dir / "history.csv"

    @property
    def predictions(self) -> Path:
        """One row per validation image, columns `prediction_columns(classes)`."""
        return self.run_dir / "predictions.csv"

    @property
    def failed(self) -> Path:
        """RunFailure as JSON: why the run failed."""
        return self.run_dir / "failed.json"

    @property
    def started(self) -> Path:
        """RunStart as JSON: the run the checkpoint belongs to (resume only onto the same run)."""
        return self.run_dir / "run.json"

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / "checkpoints" / "last.ckpt"

    @property
    def best_checkpoint(self) -> Path:
        """The epoch with the best held-out accuracy (`selection = "holdout"` only)."""
        return self.run_dir / "checkpoints" / "best.ckpt"

    def damaged_checkpoint(self, stamp: str) -> Path:
        """Where a damaged checkpoint is kept: beside checkpoints/, which a fresh start clears."""
        return self.run_dir / f"{self.checkpoint.name}.damaged-{stamp}"

    @property
    def log(self) -> Path:
        """Lightning's output of every attempt at this run, appended (not a result)."""
        return self.run_dir / "train.log"

    @property
    def results(self) -> tuple[Path, Path, Path]:
        """The files a fresh start removes."""
        return self.metrics, self.history, self.predictions


@dataclass(frozen=True)
class ReportFiles:
    """The files under report/ that stages before render write and render reads."""

    report_dir: Path

    @property
    def eda(self) -> Path:
        return self.report_dir / "eda" / "eda.json"

    @property
    def models_dir(self) -> Path:
        return self.report_dir / "models"

    def model_summary(self, architecture: str) -> Path:
        """Stages and shapes of an instantiated architecture (Figures 2-4)."""
        return self.models_dir / f"{architecture}.json"

    @property
    def statistics(self) -> Path:
        """Intervals, leak-free metrics, McNemar tests and per-class metrics (stats.py)."""
        return self.report_dir / "stats" / "stats.json"

    @property
    def figures_dir(self) -> Path:
        return self.report_dir / "figures"

    @property
    def interpret_dir(self) -> Path:
        """The interpretation stage's figures (interpret.py): top losses, Grad-CAM, leakage."""
        return self.report_dir / "interpret"

    @property
    def interpretation(self) -> Path:
        """What each interpretation figure shows, or why it is missing (interpret.py)."""
        return self.interpret_dir / "interpret.json"

    @property
    def figures_manifest(self) -> Path:
        """Which report figures the figures stage drew, or why not (report_figures.py)."""
        return self.figures_dir / "figures.json"

    def stamp(self, stage: str) -> Path:
        """What `stage` last completed with (pipeline.Stamp)."""
        return self.report_dir / ".stages" / f"{stage}.json"

    @property
    def stage_lock(self) -> Path:
        """Held while one worker runs a stage (pipeline.py)."""
        return self.report_dir / ".stages" / ".lock"


@dataclass(frozen=True)
class CacheFiles:
    """Caches shared by every run of a runs folder, under runs/cache/: each keyed by what
    determines its content, so they are caches, not results."""

    runs_dir: Path

    @property
    def folder(self) -> Path:
        """Decoded-image caches (datamodule.py), one file per dataset, split and size."""
        return self.runs_dir / "cache"

    @property
    def fast_path(self) -> Path:
        """The fast path's measurements per machine and architecture (fast_path.py)."""
        return self.folder / "fast_path.json"

    @property
    def features(self) -> Path:
        """Backbone features of frozen runs (feature_cache.py), one file per backbone, dataset,
        image selection and way of computing them."""
        return self.folder / "features"


HISTORY_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1", "seconds")


def prediction_columns(classes: list[str]) -> list[str]:
    return ["file", "true_class", "predicted_class", *(f"prob_{c}" for c in classes)]


@dataclass(frozen=True)
class PreprocessingRecord:
    """What every image went through before the network, as the run used it."""

    resize: int
    crop: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def normalisation(self) -> str:
        """'imagenet', 'half' (mean = std = 0.5) or 'other': how the report groups runs."""
        if tuple(round(v, 3) for v in self.mean) == (0.485, 0.456, 0.406) and \
                tuple(round(v, 3) for v in self.std) == (0.229, 0.224, 0.225):
            return "imagenet"
        if set(self.mean) == {0.5} and set(self.std) == {0.5}:
            return "half"
        return "other"


@dataclass(frozen=True)
class HeadRecord:
    """The classification head the run trained: input features -> hidden -> classes."""

    in_features: int
    hidden: int
    dropout: float
    outputs: int


@dataclass(frozen=True)
class RunMetrics:
    """metrics.json: what a finished experiment measured and what it used."""

    experiment: str
    title: str
    architecture: str
    architecture_title: str
    frozen: bool
    pretrained: str
    weights: str
    accuracy: float
    macro_f1: float
    confusion_matrix: list[list[int]]
    classes: list[str]
    n_train: int
    n_val: int
    params_total: int
    params_trainable: int
    epochs: int
    train_seconds: float
    device: str
    seed: int
    preprocessing: PreprocessingRecord
    versions: dict[str, str]
    batch_size: int = 0
    learning_rate: float = 0.0
    head: HeadRecord | None = None
    params_head: int = 0
    world_size: int = 1
    resumed: bool = False
    trainer: dict[str, Any] = field(default_factory=dict)
    compute: dict[str, Any] = field(default_factory=dict)  # fast_path.ComputeSetting of the run
    config_hash: str = ""
    dataset_fingerprint: str = ""
    # The epoch whose model made the predictions: mode "last" or "holdout", epoch (1-based),
    # n_holdout (training images held out to choose it; 0 for "last") and checkpoint (its file,
    # relative to the run folder). Empty in files from before it: the last epoch.
    selection: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)  # TrainingConfig.recipe_changes(): non-default keys
    schema: int = RESULTS_SCHEMA

    @property
    def selected_epoch(self) -> int:
        """The epoch whose model made predictions.csv (the last one for an older file)."""
        return int(self.selection.get("epoch") or self.epochs)

    def to_dict(self) -> dict[str, Any]:
        """As plain JSON values (lists, not tuples): equal to what `read` gives back."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: Path) -> "RunMetrics":
        """Build from parsed JSON; a missing or mistyped key is a one-line error naming `source`."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        try:
            values["preprocessing"] = PreprocessingRecord(**data["preprocessing"])
            if data.get("head"):
                values["head"] = HeadRecord(**data["head"])
            return cls(**values)
        except (KeyError, TypeError) as exc:
            raise MonkeyReportError(f"{source}: not a valid metrics file ({exc})") from None

    @classmethod
    def read(cls, path: Path) -> "RunMetrics":
        data = read_json(path)
        if not isinstance(data, dict):
            raise MonkeyReportError(f"{path}: not a valid metrics file (not a JSON object)")
        return cls.from_dict(data, path)


@dataclass(frozen=True)
class Predictions:
    """predictions.csv as arrays: one row per validation image, in a fixed file order."""

    files: list[str]
    classes: list[str]
    true: np.ndarray  # class index per file
    predicted: np.ndarray
    probabilities: np.ndarray  # (files, classes)

    @classmethod
    def read(cls, path: Path) -> "Predictions":
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = list(reader)
        if not header or header[:3] != prediction_columns([]):
            raise MonkeyReportError(f"{path}: not a predictions file (header {header})")
        classes = [c.removeprefix("prob_") for c in header[3:]]
        index = {c: i for i, c in enumerate(classes)}
        try:
            true = np.array([index[r[1]] for r in rows], dtype=np.int64)
            predicted = np.array([index[r[2]] for r in rows], dtype=np.int64)
            probabilities = np.array([[float(v) for v in r[3:]] for r in rows], dtype=np.float64)
        except (KeyError, ValueError, IndexError) as exc:
            raise MonkeyReportError(f"{path}: malformed row ({exc})") from None
        return cls([r[0] for r in rows], classes, true, predicted,
                   probabilities.reshape(len(rows), len(classes)))

    def subset(self, keep: np.ndarray) -> "Predictions":
        """The rows where the boolean mask `keep` is true."""
        return Predictions([f for f, k in zip(self.files, keep) if k], self.classes, self.true[keep],
                           self.predicted[keep], self.probabilities[keep])

    def write(self, path: Path) -> None:
        """As CSV, probabilities with six decimals: what `read` parses back."""
        rows = [[file, self.classes[t], self.classes[p], *(f"{q:.6f}" for q in probs)]
                for file, t, p, probs in zip(self.files, self.true.tolist(), self.predicted.tolist(),
                                             self.probabilities.tolist())]
        _write_csv(path, prediction_columns(self.classes), rows)


@dataclass(frozen=True)
class History:
    """history.csv: one row per finished epoch, keyed by HISTORY_COLUMNS.

    Read back, every value is a float (epoch too); a missing file is an empty history.
    """

    rows: list[dict[str, float]]

    @classmethod
    def read(cls, path: Path) -> "History":
        if not path.is_file():
            return cls([])
        with path.open(encoding="utf-8", newline="") as f:
            rows = []
            for row in csv.DictReader(f):
                try:
                    rows.append({k: float(v) for k, v in row.items()})
                except (TypeError, ValueError):
                    raise MonkeyReportError(f"{path}: malformed row {row}") from None
        return cls(rows)

    def write(self, path: Path) -> None:
        _write_csv(path, list(HISTORY_COLUMNS), [[row[c] for c in HISTORY_COLUMNS] for row in self.rows])


# Version of run.json. A run resumes only onto an equal RunStart, this version included, so
# a bump makes the checkpoints of older runs start afresh instead of resuming.
RUN_START_SCHEMA = 2  # 2: the epoch history lives in the checkpoint's EpochHistory callback state


@dataclass(frozen=True)
class RunStart:
    """run.json: what the run in checkpoints/ started from, written at a fresh start."""

    config_hash: str
    dataset_fingerprint: str
    world_size: int
    trains_on_features: bool  # its checkpoint holds the head alone (frozen, on cached features)
    schema: int = RUN_START_SCHEMA

    @property
    def identity(self) -> dict[str, Any]:
        """What identifies the run's results: recorded in metrics.json too."""
        return {"config_hash": self.config_hash, "dataset_fingerprint": self.dataset_fingerprint,
                "world_size": self.world_size}

    @classmethod
    def read(cls, path: Path) -> "RunStart | None":
        """The record at `path`; None when there is no file or it holds no RunStart. One written
        before run.json had a schema reads as schema 1."""
        data = read_json_if_exists(path)
        if not isinstance(data, dict):
            return None
        try:
            return cls(data["config_hash"], data["dataset_fingerprint"], data["world_size"],
                       data["trains_on_features"], data.get("schema", 1))
        except KeyError:
            return None

    def write(self, path: Path) -> None:
        write_json(path, asdict(self))


RUN_FAILURE_SCHEMA = 1  # failed.json


@dataclass(frozen=True)
class RunFailure:
    """failed.json: why the last attempt at a run failed (a one-line error)."""

    experiment: str
    reason: str
    schema: int = RUN_FAILURE_SCHEMA

    @classmethod
    def read(cls, path: Path) -> "RunFailure | None":
        """The record at `path`, or None when there is none; one without a schema reads as 1."""
        data = read_json_if_exists(path)
        if data is None:
            return None
        if not isinstance(data, dict) or not {"experiment", "reason"} <= data.keys():
            raise MonkeyReportError(f"{path}: not a valid failure record")
        return cls(data["experiment"], data["reason"], data.get("schema", 1))

    def write(self, path: Path) -> None:
        write_json(path, asdict(self))


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


# ----------------------------------------------------------------------------- report records
# What the stages after training write under report/: one JSON object per file, with the
# schema version of the stage that wrote it, read, checked and written through the records
# below (JsonRecord does the reading and checking for all of them).


class _Invalid(Exception):
    """A value of a record's file that does not fit its field (the message says which)."""


class JsonRecord:
    """A result file holding one JSON object whose keys are the fields of a frozen dataclass.

    A subclass is a keyword-only frozen dataclass with a `schema` field whose default is the
    version it writes, and `KIND`, how errors name the file. `read` checks every field
    against its annotation: a dataclass (ModelStage) is read into one, a list or dict item by
    item, `Any` not at all; a field with a default may be absent.
    """

    KIND: ClassVar[str] = "results file"

    @classmethod
    def schema_version(cls) -> int:
        return cls.__dataclass_fields__["schema"].default  # type: ignore[attr-defined]

    @classmethod
    def read(cls, path: Path) -> Self:
        """The record in `path`. Not valid JSON, not an object, another schema version, a
        missing or mistyped field: a one-line error naming the file."""
        return cls.from_dict(read_json(path), path)

    @classmethod
    def read_if_exists(cls, path: Path) -> Self | None:
        return cls.read(path) if path.is_file() else None

    @classmethod
    def from_dict(cls, data: Any, source: Path) -> Self:
        """Build from parsed JSON; `source` is the file named in errors. A file without a
        schema is of version 1 (written before versions were recorded)."""
        if not isinstance(data, dict):
            raise MonkeyReportError(f"{source}: not a valid {cls.KIND} (not a JSON object)")
        expected, found = cls.schema_version(), data.get("schema", 1)
        if found != expected:
            age = "an older" if isinstance(found, int) and found < expected else "another"
            raise MonkeyReportError(f"{source}: written by {age} version (schema {found}, expected {expected}); "
                                    f"run `monkeyreport build`")
        try:
            return cls(**_decode_fields(cls, data))
        except _Invalid as exc:
            raise MonkeyReportError(f"{source}: not a valid {cls.KIND} ({exc})") from None

    def to_dict(self) -> dict[str, Any]:
        """As plain JSON values: what `write` writes."""
        return json.loads(json.dumps(asdict(self)))  # type: ignore[call-overload]

    def write(self, path: Path) -> None:
        write_json(path, asdict(self))  # type: ignore[call-overload]


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _decode_fields(cls: type, data: dict[str, Any], where: str = "") -> dict[str, Any]:
    """The values of the dataclass `cls`'s fields in `data`, each checked against its type."""
    values = {}
    for f in fields(cls):
        if f.name in data:
            values[f.name] = _decode(data[f.name], _hints(cls)[f.name], f"{where}{f.name}")
        elif f.default is MISSING and f.default_factory is MISSING:
            raise _Invalid(f"'{where}{f.name}' missing")
    return values


def _decode(value: Any, hint: Any, where: str) -> Any:
    """`value` read as `hint`: a JSON value of that type, dataclasses built."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _decode(value, option, where)
            except _Invalid:
                continue
    elif is_dataclass(hint) and isinstance(value, dict):
        return hint(**_decode_fields(hint, value, f"{where}."))
    elif origin is list and isinstance(value, list):
        return [_decode(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)] if args else value
    elif origin is dict and isinstance(value, dict):
        return {k: _decode(v, args[1], f"{where}.{k}") for k, v in value.items()} if args else value
    elif hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    elif hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif hint is type(None) and value is None:
        return value
    elif hint in (str, bool) and isinstance(value, hint):
        return value
    expected = getattr(hint, "__name__", None) if not args else None
    raise _Invalid(f"'{where}' is {type(value).__name__}, expected {expected or str(hint).replace('typing.', '')}")


@dataclass(frozen=True, kw_only=True)
class EdaSummary(JsonRecord):
    """report/eda/eda.json (eda.py): everything the report says about the data."""

    KIND: ClassVar[str] = "EDA summary"

    dataset_root: str  # the dataset layout's root, which every `file` below is relative to
    classes: list[dict[str, str]]  # code, latin_name, common_name, display_name
    splits: dict[str, dict[str, Any]]  # split -> total, per_class {code: n}, min_per_class, max_per_class
    total_images: int  # usable images
    files_scanned: int
    image_sizes: dict[str, Any]  # width, height (min, max, mean, median), most_common, landscape, ...
    formats: dict[str, int]  # of the usable images, most common first
    extensions: dict[str, int]
    modes: dict[str, int]
    main_format: str
    odd_files: list[dict[str, Any]]  # file, split, class, format, extension, issues, reason
    unreadable: list[dict[str, Any]]  # file, split, class, kind, reason
    duplicates: dict[str, Any]  # groups (kind, files, splits, classes, cross_split) and their counts
    dataset_problems: list[dict[str, Any]]  # data.Problem.as_dict()
    schema: int = EDA_SCHEMA
    dataset_fingerprint: str
    created: str  # ISO time, UTC
    figures: dict[str, str]  # the data figures, relative to the report folder

    @property
    def leaked_validation_files(self) -> set[str]:
        """Validation files with an exact or near copy in training (the duplicate groups that
        cross the split): what the duplicate-free metrics and the galleries leave out or mark."""
        return {f["file"] for g in self.duplicates["groups"] if g["cross_split"]
                for f in g["files"] if f["split"] == "validation"}

    @property
    def validation_copies(self) -> list[list[str]]:
        """The validation files of each duplicate group with two or more of them: copies of
        one photograph inside the validation split, which the statistics and galleries count
        once."""
        groups = ([f["file"] for f in g["files"] if f["split"] == "validation"] for g in self.duplicates["groups"])
        return [files for files in groups if len(files) > 1]


@dataclass(frozen=True, kw_only=True)
class Statistics(JsonRecord):
    """report/stats/stats.json (stats.py): intervals, leak-free metrics, McNemar tests."""

    KIND: ClassVar[str] = "statistics file"

    schema: int = STATS_SCHEMA
    n_resamples: int
    confidence: float
    alpha: float
    seed: int
    n_leaked: int  # validation files with a copy in training
    seeds: list[int]  # the runs' seeds (Config.run_seeds)
    best: str | None  # the experiment with the best mean accuracy (then macro F1) over its seeds
    experiments: dict[str, dict[str, Any]]  # run -> n_val, n_leaked, n_photographs, all, leak_free, leaked,
    # per_class, most_confused, calibration
    groups: dict[str, dict[str, Any]]  # experiment -> runs, seeds, accuracy/macro_f1 (+ leak_free, leaked), ece,
    # train_seconds and epochs over seeds
    comparisons: list[dict[str, Any]]  # experiment pairs: per-seed McNemar, the deciding test, Holm
    parameters: dict[str, Any] | None  # experiments (by parameters), rho; None below three architectures
    problems: list[str]  # the result files that could not be read
    calibration: dict[str, Any]  # bins, norm and trusted_below of the ECE (calibration.py)


@dataclass(frozen=True, kw_only=True)
class Interpretation(JsonRecord):
    """report/interpret/interpret.json (interpret.py): what each interpretation figure shows,
    or why it is missing (`file` None and its `error`)."""

    KIND: ClassVar[str] = "interpretation file"

    schema: int = INTERPRET_SCHEMA
    galleries: list[dict[str, Any]]  # experiment, roles, file, error, items, n_leaked
    gradcam: dict[str, Any] | None  # architecture, title, target_layer, file, error, images, panels
    leakage: dict[str, Any] | None  # pairs, file, error


@dataclass(frozen=True, kw_only=True)
class FiguresManifest(JsonRecord):
    """report/figures/figures.json (report_figures.py): the report figures drawn, relative to
    the report folder; None where a figure has no data."""

    KIND: ClassVar[str] = "figures list"

    schema: int = FIGURES_SCHEMA
    cnn: str | None
    transfer: str | None
    diagrams: dict[str, str | None]  # architecture -> its diagram
    confusion: dict[str, str | None]  # architecture -> the confusion matrices of its experiments
    curves: str | None
    seeds: str | None = None  # every seed's accuracy and macro F1 per experiment (several seeds)
    reliability: str | None = None  # reliability diagram of each experiment (its first seed)

    @property
    def drawn(self) -> list[str]:
        return [p for p in (self.cnn, self.transfer, *self.diagrams.values(), *self.confusion.values(), self.curves,
                            self.seeds, self.reliability) if p]


@dataclass(frozen=True)
class ModelStage:
    """One box of an architecture diagram: a top-level stage of the backbone or the head."""

    group: str  # "backbone" or "head"
    name: str
    layer: str  # its layer type, folded activations and normalisations joined with " + "
    output_shape: list[int]
    params: int


@dataclass(frozen=True)
class Latency:
    """Measured inference time of one batch size: the median of `repeats` timed passes."""

    batch: int
    ms_per_image: float
    repeats: int


@dataclass(frozen=True)
class ModelEfficiency:
    """Cost of one image through the model at `input_shape` (summaries.py): FLOPs counted by
    torch.utils.flop_counter (a multiply-add is two FLOPs), and CPU latency measured in eval
    mode on `cpu` with `threads` threads."""

    input_shape: list[int]
    flops: int
    flops_backbone: int
    flops_head: int
    latency: list[Latency]
    cpu: str
    threads: int
    torch: str


@dataclass(frozen=True, kw_only=True)
class ModelSummary(JsonRecord):
    """report/models/<architecture>.json (summaries.py): an instantiated architecture."""

    KIND: ClassVar[str] = "model summary"

    schema: int = SUMMARY_SCHEMA
    architecture: str
    title: str
    family: str
    library: str
    input_shape: list[int]
    params_total: int
    stages: list[ModelStage]
    params_backbone: int
    params_head: int
    params_trainable_frozen: int  # what a frozen variant trains: the head
    params_trainable_finetuned: int  # what fine-tuning (or training from scratch) trains: everything
    efficiency: ModelEfficiency
