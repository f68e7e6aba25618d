"""The feature cache: the backbone features of frozen runs, computed once and shared.

A frozen run without augmentation trains its head on its backbone's features
(training.extract_features). Runs whose features would be the same (the seeds of one
experiment, the head recipes of one architecture) read one file under runs/cache/features/,
named by a hash of everything that determines its content (`describe`): the backbone's
weights themselves (a random backbone, different for each seed, gets a file of its own), the
dataset, the ordered images of each split, their preprocessing, where and how the pass
computes (device, precision, memory format, batch size, processes) and the library versions.
So a run that reads the cache gets, bit for bit, the features it would have computed.

A file is written whole by one process (a temporary file, then a rename), so a reader never
sees half of one. Read, it is checked against the description echoed in it and against the
sample count and labels of each split; a damaged one is rebuilt, with one line saying so, as
the image cache is (datamodule.py). Workers sharing the runs folder (work_queue.py) compute a
file once: the first holds its lock while it computes, the others wait and then read it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import timm
import torch
import torchvision
from filelock import FileLock
from torch import nn

from monkeyreport import results
from monkeyreport.config import stable_hash
from monkeyreport.console import log
from monkeyreport.datamodule import Preprocessing, Sample

FEATURE_SCHEMA = 1


@dataclass(frozen=True)
class Features:
    """Backbone features (float32, one row per sample, in sample order) and labels, by split."""

    features: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]


def weights_digest(module: nn.Module) -> str:
    """A digest of the module's parameters and buffers: names, types, shapes and values, in
    the standard layout (a channels-last copy digests like the original)."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)};".encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def describe(architecture: str, backbone: nn.Module, dataset_fingerprint: str, splits: dict[str, list[Sample]],
             preprocessing: Preprocessing, max_pixels: int, compute: dict[str, Any]) -> dict[str, Any]:
    """What determines the features of `splits` (split -> its samples, in order): the key of
    their file, and the description stored in it. `compute`: device, precision, memory
    format, batch size and processes of the pass."""
    description = {
        "schema": FEATURE_SCHEMA,
        "architecture": architecture,
        "weights": weights_digest(backbone),
        "dataset": dataset_fingerprint,
        "preprocessing": {"resize": preprocessing.resize, "crop": preprocessing.crop,
                          "mean": list(preprocessing.mean), "std": list(preprocessing.std),
                          "max_pixels": max_pixels},
        "compute": compute,
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__, "timm": timm.__version__},
        "splits": {split: [s.relpath for s in samples] for split, samples in splits.items()},
    }
    return json.loads(json.dumps(description))  # plain lists and numbers: as they read back


def feature_path(folder: Path, description: dict[str, Any]) -> Path:
    return folder / f"features-{stable_hash(description)}.pt"


def read_features(path: Path, description: dict[str, Any], labels: dict[str, torch.Tensor]
                  ) -> tuple[Features | None, str]:
    """The features stored at `path`, or None and why they cannot serve: "missing", or the
    damage found. `labels` (split -> the samples' labels) must match the stored ones."""
    if not path.is_file():
        return None, "missing"
    try:
        with warnings.catch_warnings():  # a stray pickle would warn before failing: one line only
            warnings.simplefilter("ignore")
            content = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
        return None, "unreadable"
    if not isinstance(content, dict) or content.get("description") != description:
        return None, "describes other features"
    stored_features, stored_labels = content.get("features"), content.get("labels")
    if not isinstance(stored_features, dict) or not isinstance(stored_labels, dict):
        return None, "incomplete"
    widths = set()
    for split, expected in labels.items():
        rows, got = stored_features.get(split), stored_labels.get(split)
        if not isinstance(rows, torch.Tensor) or rows.dtype != torch.float32 or rows.dim() != 2:
            return None, f"no float32 feature matrix for {split}"
        if rows.shape[0] != len(expected):
            return None, f"{split}: {rows.shape[0]} rows, expected {len(expected)}"
        if not isinstance(got, torch.Tensor) or not torch.equal(got, expected):
            return None, f"{split}: labels do not match"
        widths.add(rows.shape[1])
    if len(widths) > 1:
        return None, "splits of different widths"
    return Features({s: stored_features[s] for s in labels}, {s: stored_labels[s] for s in labels}), ""


def write_features(path: Path, description: dict[str, Any], features: Features) -> None:
    with results.atomic_path(path) as tmp:
        torch.save({"description": description, "features": features.features, "labels": features.labels}, tmp)


def cached_features(path: Path, description: dict[str, Any], labels: dict[str, torch.Tensor],
                    compute: Callable[[], Features], writer: bool = True,
                    agree: Callable[[bool], bool] = lambda found: found) -> Features:
    """The features at `path` when they are there and sound, else `compute()`d and, by the
    `writer`, stored there (a damaged file is rebuilt with one warning line).

    With several processes every one must take the same branch (`compute` is a collective):
    `agree` turns this process's "found" into the common decision. Only the writer holds the
    file's lock: another process of its group waiting on it would hold up the collective."""
    lock = FileLock(path.with_name(path.name + ".lock")) if writer else contextlib.nullcontext()
    path.parent.mkdir(parents=True, exist_ok=True)
    with lock:
        found, problem = read_features(path, description, labels)
        if agree(found is not None):
            assert found is not None  # every process found it, this one included
            log.info(f"features read from {path}")
            return found
        if writer and problem != "missing" and found is None:
            log.warning(f"feature cache {path} is damaged ({problem}); rebuilding it")
        computed = compute()
        if writer and found is None:
            write_features(path, description, computed)
            log.info(f"features computed into {path}")
        return computed
