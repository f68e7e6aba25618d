"""The TOML config: typed sections, validation with one-line errors, overrides, hashes.

Relative paths in a config are taken relative to the current working directory, so the
same config works from the project root whatever folder it is stored in.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from monkeyreport.errors import ConfigError

DEFAULT_CONFIG = Path("monkeyreport.toml")
DEFAULT_DATA_ROOT = Path("data/10-monkey-species")
DATA_ENV_VAR = "MONKEYREPORT_DATA"
WEIGHT_SOURCES = ("imagenet", "none", "packaged")  # any other `pretrained` value is a file path


@dataclass(frozen=True)
class DataConfig:
    root: str = ""  # empty: data/10-monkey-species; --data-dir and $MONKEYREPORT_DATA win
    max_image_pixels: int = 60_000_000  # larger images are skipped, never decoded

    def validate(self) -> None:
        _require(self.max_image_pixels > 0, "data.max_image_pixels", "must be positive")


@dataclass(frozen=True)
class OutputConfig:
    report_dir: str = "report"
    runs_dir: str = "runs"


@dataclass(frozen=True)
class EdaConfig:
    samples_per_class: int = 4
    near_duplicate_distance: int = 10  # max Hamming distance between 64-bit perceptual hashes
    workers: int = 0  # processes for probing images; 0 = one per CPU core

    def validate(self) -> None:
        _require(1 <= self.samples_per_class <= 12, "eda.samples_per_class", "must be 1..12")
        _require(
            0 <= self.near_duplicate_distance <= 32, "eda.near_duplicate_distance", "must be 0..32"
        )
        _require(self.workers >= 0, "eda.workers", "must be >= 0")


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 0.001
    resize: int = 256
    crop: int = 224
    num_workers: int = 2
    max_images_per_class: int = 0  # 0 = every image; smoke profiles use a subset
    image_cache: bool = True  # decode each image once into a uint8 cache under runs_dir
    feature_cache: bool = True  # frozen: run the backbone once, train the head on its features
    # The recipe beyond the original report's (Adam, constant rate, no augmentation, last
    # epoch); each key may also be set in an [[experiments]] entry, which wins there.
    optimizer: str = "adam"  # any name timm.optim.create_optimizer_v2 knows ("adamw", "sgd", ...)
    weight_decay: float = 0.0
    layer_decay: float = 0.0  # 0: one rate for every layer; else timm's per-layer decay
    scheduler: str = "none"  # "none", "cosine" or "step" (timm.scheduler), stepped per epoch
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    augment: str = "none"  # "none", "flip" or a timm auto-augment string ("rand-m9-mstd0.5")
    freeze_epochs: int = 0  # fine-tuning: train the head alone for this many epochs first
    selection: str = "last"  # "last" epoch, or the best "holdout" epoch (held-out training images)
    holdout_fraction: float = 0.15

    def validate(self) -> None:
        _require(self.epochs >= 1, "training.epochs", "must be >= 1")
        _require(self.batch_size >= 1, "training.batch_size", "must be >= 1")
        _require(self.learning_rate > 0, "training.learning_rate", "must be positive")
        _require(self.crop >= 16, "training.crop", "must be >= 16")
        _require(self.resize >= self.crop, "training.resize", "must be >= training.crop")
        _require(self.num_workers >= 0, "training.num_workers", "must be >= 0")
        _require(self.max_images_per_class >= 0, "training.max_images_per_class", "must be >= 0")
        _require(bool(self.optimizer.strip()), "training.optimizer", "must not be empty")
        _require(self.weight_decay >= 0, "training.weight_decay", "must be >= 0")
        _require(0 <= self.layer_decay <= 1, "training.layer_decay", "must be 0 (off) or in (0, 1]")
        _require(self.scheduler in SCHEDULERS, "training.scheduler", f"must be one of {', '.join(SCHEDULERS)}")
        _require(0 <= self.warmup_epochs < self.epochs, "training.warmup_epochs", "must be >= 0 and < epochs")
        _require(0 <= self.label_smoothing < 1, "training.label_smoothing", "must be in [0, 1)")
        _require(self.augment in ("none", "flip") or self.augment.startswith(("rand-", "augmix-", "original",
                                                                                  "v0", "3a")),
                 "training.augment", 'must be "none", "flip" or a timm auto-augment string such as '
                 '"rand-m9-mstd0.5"')
        _require(0 <= self.freeze_epochs < self.epochs, "training.freeze_epochs", "must be >= 0 and < epochs")
        _require(self.selection in SELECTIONS, "training.selection", f"must be one of {', '.join(SELECTIONS)}")
        _require(0 < self.holdout_fraction < 1, "training.holdout_fraction", "must be in (0, 1)")

    def recipe_changes(self) -> dict[str, Any]:
        """The recipe keys whose values differ from the defaults: a run's identity includes
        them, so the original recipe's runs keep the identity they had before these keys."""
        default = TrainingConfig()
        return {k: getattr(self, k) for k in RECIPE_KEYS if getattr(self, k) != getattr(default, k)}

    def trains_on_features(self, frozen: bool) -> bool:
        """Whether a run trains its head on backbone features computed once (`feature_cache`):
        only a frozen experiment without augmentation, since augmented images give other
        features every epoch. Otherwise every epoch runs the whole network."""
        return frozen and self.feature_cache and self.augment == "none"


@dataclass(frozen=True)
class ReportConfig:
    """The title block: author and course are shown when set; `date` (ISO "YYYY-MM-DD" or a
    TOML date) replaces the day of the build."""

    author: str = ""
    course: str = ""
    date: Union[str, datetime.date] = ""

    def validate(self) -> None:
        _require(self.day is not None or self.date == "", "report.date",
                 f"must be a date such as 2025-05-12, got {self.date!r}")

    @property
    def day(self) -> datetime.date | None:
        """The configured date, None when unset or not a date."""
        if isinstance(self.date, datetime.date):
            return self.date.date() if isinstance(self.date, datetime.datetime) else self.date
        try:
            return datetime.date.fromisoformat(self.date)
        except ValueError:
            return None


@dataclass(frozen=True)
class TrainerConfig:
    """Passed through to lightning.Trainer, so a GPU or cluster runs the same config."""

    accelerator: str = "auto"
    devices: Union[int, str, list[int]] = "auto"
    precision: str = "auto"  # "auto": measured per architecture on a CPU, else "32-true" (fast_path.py)
    strategy: str = "auto"
    num_nodes: int = 1
    # "auto": measured together with precision on a CPU (fast_path.py), else contiguous;
    # "channels_last"; "contiguous"
    memory_format: str = "auto"

    def validate(self) -> None:
        _require(self.num_nodes >= 1, "trainer.num_nodes", "must be >= 1")
        _require(self.memory_format in ("auto", "channels_last", "contiguous"), "trainer.memory_format",
                 'must be "auto", "channels_last" or "contiguous"')


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    architecture: str
    title: str = ""  # shown in Tabla 1; defaults to the name
    frozen: bool = False
    pretrained: str = "none"  # "imagenet", "none", "packaged", or a path to a state dict
    training: dict[str, Any] = field(default_factory=dict)  # [training] keys set in this entry

    @property
    def identity(self) -> dict[str, Any]:
        """What names and builds its model (not its recipe, which a run's identity takes from
        the resolved training settings)."""
        return {"name": self.name, "architecture": self.architecture, "title": self.title,
                "frozen": self.frozen, "pretrained": self.pretrained}

    def validate(self, where: str) -> None:
        _require(bool(self.name.strip()), f"{where}.name", "must not be empty")
        _require(bool(self.architecture.strip()), f"{where}.architecture", "must not be empty")
        if self.weights_file is not None:
            _require(self.weights_file.is_file(), f"{where}.pretrained",
                     f"(experiment '{self.name}'): weights file {self.weights_file} does not exist; "
                     "use a state dict path, \"imagenet\", \"packaged\" or \"none\"")

    @property
    def weights_file(self) -> Path | None:
        """The local state dict named by `pretrained`, if it names one."""
        return None if self.pretrained in WEIGHT_SOURCES else Path(self.pretrained)

    @property
    def label(self) -> str:
        return self.title or self.name


@dataclass(frozen=True)
class Run:
    """One unit of training: an experiment with one seed, in its own folder of the runs folder."""

    experiment: ExperimentConfig
    seed: int
    name: str  # the experiment's name with one seed, "<experiment>-seed<seed>" with several


@dataclass(frozen=True)
class Config:
    seed: int = 42  # the EDA's sample choice and the bootstrap; the runs' seed without `seeds`
    seeds: list[int] = field(default_factory=list)  # one run per experiment and seed
    data: DataConfig = field(default_factory=DataConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    eda: EdaConfig = field(default_factory=EdaConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    experiments: list[ExperimentConfig] = field(default_factory=list)
    report: ReportConfig = field(default_factory=ReportConfig)
    source: str = ""  # the file this config was read from (not a TOML key)

    @property
    def report_dir(self) -> Path:
        return Path(self.output.report_dir)

    @property
    def runs_dir(self) -> Path:
        return Path(self.output.runs_dir)

    @property
    def run_seeds(self) -> list[int]:
        return self.seeds or [self.seed]

    @property
    def runs(self) -> list[Run]:
        """Every (experiment, seed) pair, experiments in config order, seeds within each."""
        several = len(self.run_seeds) > 1
        return [Run(e, s, f"{e.name}-seed{s}" if several else e.name) for e in self.experiments
                for s in self.run_seeds]

    def recipe(self, experiment: ExperimentConfig) -> TrainingConfig:
        """The [training] settings with the experiment's own keys applied."""
        return dataclasses.replace(self.training, **experiment.training)

    def for_run(self, run: Run) -> Config:
        """This config as one run sees it: its seed and its experiment's recipe."""
        return dataclasses.replace(self, seed=run.seed, training=self.recipe(run.experiment))

    def with_overrides(
        self,
        data_dir: Path | None = None,
        out: Path | None = None,
        epochs: int | None = None,
    ) -> Config:
        """Apply command-line overrides, validating them like config values."""
        cfg = self
        if data_dir is not None:
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(data_dir)))
        if out is not None:
            cfg = dataclasses.replace(
                cfg, output=dataclasses.replace(cfg.output, report_dir=str(out))
            )
        if epochs is not None:
            if epochs < 1:
                raise ConfigError(f"--epochs: must be >= 1, got {epochs}")
            cfg = dataclasses.replace(
                cfg, training=dataclasses.replace(cfg.training, epochs=epochs)
            )
        return cfg


SCHEDULERS = ("none", "cosine", "step")
SELECTIONS = ("last", "holdout")
RECIPE_KEYS = ("optimizer", "weight_decay", "layer_decay", "scheduler", "warmup_epochs", "label_smoothing",
               "augment", "freeze_epochs", "selection", "holdout_fraction")
TRAINING_KEYS = frozenset(f.name for f in dataclasses.fields(TrainingConfig))
TRAINING_HINTS = typing.get_type_hints(TrainingConfig)


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"'{key}' {message}")


def data_dir_override(flag: Path | None) -> Path | None:
    """The dataset folder that overrides the config: `--data-dir`, else $MONKEYREPORT_DATA."""
    if flag is not None:
        return flag
    env = os.environ.get(DATA_ENV_VAR, "").strip()
    return Path(env) if env else None


def resolve_data_root(config: Config) -> Path:
    """The dataset folder after overrides: the config value, else data/10-monkey-species."""
    return Path(config.data.root) if config.data.root else DEFAULT_DATA_ROOT


def load_config(path: Path) -> Config:
    """Read and validate a TOML config; every error is one line naming the file and key."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    try:
        config = _parse(table)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return dataclasses.replace(config, source=str(path))


def _parse(table: dict[str, Any]) -> Config:
    experiments_raw = table.pop("experiments", [])
    if not isinstance(experiments_raw, list):
        raise ConfigError("'experiments' must be an array of tables ([[experiments]])")
    config = _build(Config, table, prefix="", skip=frozenset({"experiments", "source"}))
    if len(set(config.seeds)) != len(config.seeds):
        raise ConfigError("'seeds' must not repeat a seed")
    experiments = []
    seen: set[str] = set()
    for i, raw in enumerate(experiments_raw):
        where = f"experiments[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"'{where}' must be a table")
        own = {k: v for k, v in raw.items() if k not in TRAINING_KEYS}
        exp = _build(ExperimentConfig, own, prefix=where, skip=frozenset({"training"}))
        recipe = {k: _coerce(v, TRAINING_HINTS[k], f"{where}.{k}") for k, v in raw.items() if k in TRAINING_KEYS}
        exp = dataclasses.replace(exp, training=recipe)
        exp.validate(where)
        try:
            config.recipe(exp).validate()
        except ConfigError as exc:
            raise ConfigError(f"{exc} (with the keys of '{where}', experiment '{exp.name}')") from None
        if exp.name in seen:
            raise ConfigError(f"'{where}.name' duplicates experiment name '{exp.name}'")
        seen.add(exp.name)
        experiments.append(exp)
    for section in (config.data, config.eda, config.training, config.trainer, config.report):
        section.validate()
    return dataclasses.replace(config, experiments=experiments)


def _build(cls: type, table: dict[str, Any], prefix: str, skip: frozenset[str] = frozenset()) -> Any:
    """Construct dataclass `cls` from a TOML table, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    for key in table:
        if key not in fields:
            raise ConfigError(f"unknown key '{_join(prefix, key)}'")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = _join(prefix, name)
        if name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing key '{key}'")
            continue
        kwargs[name] = _coerce(table[name], hints[name], key)
    return cls(**kwargs)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _coerce(value: Any, hint: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a table ([{key}])")
        return _build(hint, value, prefix=key)
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"'{key}' has the wrong type: got {_toml_type(value)} {value!r}")
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"'{key}' must be an array, got {_toml_type(value)}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"'{key}' must be an integer, got boolean")
    if not isinstance(value, hint):
        raise ConfigError(
            f"'{key}' must be {_toml_type_name(hint)}, got {_toml_type(value)} {value!r}"
        )
    return value


def _toml_type_name(hint: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "a boolean"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def _toml_type(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array"}
    return names.get(type(value), type(value).__name__)


def stable_hash(*parts: Any) -> str:
    """A short hash of JSON-serialisable parts (dataclasses allowed), stable across runs."""
    payload = json.dumps(
        [dataclasses.asdict(p) if dataclasses.is_dataclass(p) else p for p in parts],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
