"""The torch side of the dataset layer: datasets over probed files, the decoded-image cache,
and the DataModule.

Kept apart from `data.py` so that the EDA and the renderer never pay for importing torch.

Preprocessing is split in two. Resize and centre crop are deterministic, so they run once
per image into a uint8 cache (a memory-mapped file under the runs folder); conversion to
float and normalisation run on the batch, on the training device, so one cache serves
every backbone whatever its normalisation statistics.

Every batch is (inputs, labels, sample indices): the indices let training put together what
several processes predicted (see `make_loader` and training.py).

Training images may be augmented (`augment`, a transform from recipe.py), after the cache,
one image at a time: the cache keeps the deterministic crops, shared by every run. With a
holdout (`selection = "holdout"`), training reads its images without the held-out ones and
validation reads the held-out ones; the validation split is then only predicted. Both are
index subsets of the same cached training crops.

A damaged image cache is rebuilt with a one-line warning (`cache_problem` says what is
detected). Backbone features of frozen experiments have their own cache (feature_cache.py).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

import lightning as L
import numpy as np
import torch
from filelock import FileLock
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset, TensorDataset
from torchvision.transforms import v2

from monkeyreport import results
from monkeyreport.config import stable_hash
from monkeyreport.console import log
from monkeyreport.data import DatasetLayout, ImageRecord, load_rgb
from monkeyreport.errors import MonkeyReportError

CACHE_SCHEMA = 1

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # inputs, labels, sample indices
Order = Literal["shuffled", "each_once", "padded"]


@dataclass(frozen=True)
class Sample:
    path: Path
    relpath: str
    label: int


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side, centre-crop, normalise: deterministic, as in the report."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def crop_transform(self) -> v2.Compose:
        """PIL image -> uint8 CHW tensor of the crop."""
        return v2.Compose([v2.ToImage(), v2.Resize(self.resize, antialias=True), v2.CenterCrop(self.crop)])

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW batch -> normalised float batch, on whatever device the batch is."""
        mean = torch.tensor(self.mean, device=batch.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=batch.device).view(1, 3, 1, 1)
        return (batch.float().div_(255) - mean) / std


class DecodedImages(Dataset):
    """Decodes every image each time it is read (reduced-scale JPEG decoding)."""

    def __init__(self, samples: list[Sample], preprocessing: Preprocessing, max_pixels: int) -> None:
        self.samples = samples
        self.resize = preprocessing.resize
        self.transform = preprocessing.crop_transform()
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        sample = self.samples[index]
        return self.transform(load_rgb(sample.path, self.resize, self.max_pixels)), sample.label, index


class CachedImages(Dataset):
    """Reads decoded crops from the uint8 cache."""

    def __init__(self, images: np.ndarray, samples: list[Sample]) -> None:
        self.images = images
        self.labels = [s.label for s in samples]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        return torch.from_numpy(np.array(self.images[index])), self.labels[index], index


class Augmented(Dataset):
    """A training dataset's items with `transform` applied to each image (uint8 CHW in and out)."""

    def __init__(self, dataset: Dataset, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        image, label, sample = self.dataset[index]
        return self.transform(image), label, sample


def fit_datasets(train: Dataset, holdout: Sequence[int],
                 augment: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[Dataset, Dataset | None]:
    """What training and the validation during fit read: `train` without the samples at the
    `holdout` positions (augmented with `augment`), and those samples (None without a holdout:
    validation is on the validation split). Items keep their index in `train`."""
    held = set(holdout)
    fit = Subset(train, [i for i in range(len(train)) if i not in held]) if held else train
    return (Augmented(fit, augment) if augment else fit), (Subset(train, sorted(held)) if held else None)


def image_cache_path(samples: list[Sample], preprocessing: Preprocessing, cache_dir: Path,
                     dataset_fingerprint: str, max_pixels: int) -> Path:
    """Where the crops of `samples` are cached.

    The file name is a hash of the dataset fingerprint, the crop settings and the sample
    list, so a changed image or setting gives a new cache and an unchanged one is reused.
    """
    key = stable_hash(CACHE_SCHEMA, dataset_fingerprint, preprocessing.resize, preprocessing.crop,
                      max_pixels, [s.relpath for s in samples])
    return cache_dir / f"images-{key}.u8"


def build_image_cache(path: Path, samples: list[Sample], preprocessing: Preprocessing,
                      max_pixels: int, num_workers: int) -> None:
    """Decode the crops of `samples` into `path`, unless a complete cache is there. A damaged
    one is rebuilt, with one line saying so. Workers sharing the runs folder (work_queue.py)
    build it once: the first holds its lock, the others wait and find it complete."""
    shape = _cache_shape(samples, preprocessing)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_name(path.name + ".lock")):
        problem = cache_problem(path, samples, shape)
        if problem is None:
            return
        if path.exists() or _sidecar(path).exists():
            log.warning(f"image cache {path} is damaged ({problem}); rebuilding it")
        loader = make_loader(DecodedImages(samples, preprocessing, max_pixels), 64, "each_once", seed=0,
                             num_workers=num_workers)
        with results.atomic_path(path) as tmp:
            images = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
            for batch, _, index in loader:
                images[index.numpy()] = batch.numpy()
            images.flush()
            del images
        results.write_json(_sidecar(path), _description(samples, shape))  # last: the cache is complete


def open_image_cache(path: Path, samples: list[Sample], preprocessing: Preprocessing) -> np.ndarray:
    """The cached crops as a read-only (N, 3, crop, crop) uint8 memmap; a cache damaged since
    it was built is a one-line error (the next run rebuilds it)."""
    shape = _cache_shape(samples, preprocessing)
    problem = cache_problem(path, samples, shape)
    if problem:
        raise MonkeyReportError(f"{path}: image cache is damaged ({problem}); run again to rebuild it")
    return np.memmap(path, dtype=np.uint8, mode="r", shape=shape)


def cache_problem(path: Path, samples: list[Sample], shape: tuple[int, ...]) -> str | None:
    """Why the image cache at `path` cannot serve `samples`, or None.

    Detected cheaply, without reading the pixels: a size other than the crops' (a copy cut
    short, a full disk), and a .json sidecar, written last, that is missing (a build cut
    short), unreadable or describes other crops. Pixels overwritten in place at the same size
    are not detected: that would take hashing the whole cache at every use.
    """
    if not path.is_file():
        return "missing"
    size, expected = path.stat().st_size, math.prod(shape)
    if size != expected:
        return f"{size} bytes, expected {expected}"
    sidecar = _sidecar(path)
    try:
        description = json.loads(sidecar.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{sidecar.name} missing"
    except (OSError, ValueError):
        return f"{sidecar.name} unreadable"
    return None if description == _description(samples, shape) else f"{sidecar.name} does not match"


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def _description(samples: list[Sample], shape: tuple[int, ...]) -> dict[str, list]:
    """What the sidecar of a complete cache holds."""
    return {"shape": list(shape), "files": [s.relpath for s in samples]}


def image_cache(samples: list[Sample], preprocessing: Preprocessing, cache_dir: Path,
                dataset_fingerprint: str, max_pixels: int, num_workers: int) -> np.ndarray:
    """The crops of `samples`, cached first if needed, in one process (MonkeyDataModule splits
    the two steps between Lightning's `prepare_data` and `setup`)."""
    path = image_cache_path(samples, preprocessing, cache_dir, dataset_fingerprint, max_pixels)
    build_image_cache(path, samples, preprocessing, max_pixels, num_workers)
    return open_image_cache(path, samples, preprocessing)


def _cache_shape(samples: list[Sample], preprocessing: Preprocessing) -> tuple[int, int, int, int]:
    return len(samples), 3, preprocessing.crop, preprocessing.crop


def make_loader(dataset: Dataset, batch_size: int, order: Order, seed: int, num_workers: int = 0,
                num_replicas: int = 1, rank: int = 0) -> DataLoader:
    """A DataLoader over this process's share (`rank` of `num_replicas`) of `dataset`.

    Its randomness is its own: the order comes from the sampler and worker seeds from a
    private generator, so the global RNG (weight initialisation, dropout) is untouched by
    data loading. The samplers are DistributedSamplers, so Lightning keeps them as they are
    instead of injecting its own. `order`:

    - "shuffled" (training): a permutation that depends only on (seed, epoch), since Lightning
      calls `set_epoch` before every epoch; so the order of epoch k is the same whether the
      run decodes in worker processes, reads a cache or resumed from a checkpoint. Each share
      is padded by repeating samples to the same length: DDP needs the same number of steps
      in every process.
    - "each_once" (validation): in order, each sample in exactly one process (Lightning's
      UnrepeatedDistributedSampler); shares may differ by one sample, which validation under
      DDP tolerates: metrics reduce over processes once per epoch, and DDP broadcasts buffers
      only in the first forward pass after training. (A strategy that needs every process in
      every forward pass, such as FSDP, would need "padded" and deduplication here.)
    - "padded" (prediction): in order, padded like "shuffled" so that every process runs the
      same number of steps, which predict_step's all-gather needs; the repeated samples are
      dropped by sample index after gathering.

    With one process all three are the plain order (a seeded permutation for "shuffled").
    """
    sampler: DistributedSampler
    if order == "each_once":
        sampler = UnrepeatedDistributedSampler(dataset, num_replicas, rank, shuffle=False)
    else:
        sampler = DistributedSampler(dataset, num_replicas, rank, shuffle=order == "shuffled", seed=seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      persistent_workers=num_workers > 0, pin_memory=torch.cuda.is_available(),
                      generator=torch.Generator().manual_seed(seed + 1))


def process_share(trainer: L.Trainer | None) -> dict[str, int]:
    """`num_replicas` and `rank` for `make_loader`, as the running Trainer splits the data
    between processes; empty (one process) without a Trainer or with a single-device one."""
    return (trainer.distributed_sampler_kwargs if trainer is not None else None) or {}


def select_samples(layout: DatasetLayout, records: list[ImageRecord], split: str,
                   max_per_class: int = 0, seed: int = 0) -> list[Sample]:
    """Usable images of one split, labelled by class index; optionally a seeded subset."""
    index = {code: i for i, code in enumerate(layout.class_codes)}
    samples = []
    for code in layout.class_codes:
        mine = [r for r in records if r.ok and r.split == split and r.code == code]
        if max_per_class and len(mine) > max_per_class:
            mine = sorted(random.Random(f"{seed}-{split}-{code}").sample(mine, max_per_class),
                          key=lambda r: r.relpath)
        samples += [Sample(layout.root / r.relpath, r.relpath, index[code]) for r in mine]
    return samples


class MonkeyDataModule(L.LightningDataModule):
    """Training and validation loaders; batches arrive as uint8 and are normalised on device.

    With `cache_dir`, images are decoded once into the image cache: in `prepare_data`, which
    Lightning runs in one process per node while the others wait, and `setup` (every process)
    only opens it. Without it (the plain path), every epoch decodes every JPEG again.
    `predict_splits` are the splits `predict_dataloader` serves, in that order. With
    `channels_last`, batches arrive in that memory format (for a model converted to it).
    `holdout`: positions in `train` validated on during fit instead of `val`, and not trained
    on; `augment`: the random transform of training images (see `fit_datasets`).
    """

    def __init__(self, train: list[Sample], val: list[Sample], preprocessing: Preprocessing,
                 batch_size: int, num_workers: int, max_pixels: int,
                 cache_dir: Path | None = None, dataset_fingerprint: str = "", seed: int = 0,
                 predict_splits: tuple[str, ...] = ("val",), channels_last: bool = False,
                 holdout: Sequence[int] = (), augment: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.holdout = list(holdout)
        self.augment = augment
        self.seed = seed
        self.train_samples = train
        self.val_samples = val
        self.preprocessing = preprocessing
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.max_pixels = max_pixels
        self.cache_dir = cache_dir
        self.dataset_fingerprint = dataset_fingerprint
        self.predict_splits = predict_splits
        self._datasets: dict[str, Dataset] = {}

    def _splits(self) -> dict[str, list[Sample]]:
        return {"train": self.train_samples, "val": self.val_samples}

    def _cache_path(self, samples: list[Sample]) -> Path:
        assert self.cache_dir is not None
        return image_cache_path(samples, self.preprocessing, self.cache_dir, self.dataset_fingerprint,
                                self.max_pixels)

    def prepare_data(self) -> None:
        if self.cache_dir is None:
            return
        for samples in self._splits().values():
            build_image_cache(self._cache_path(samples), samples, self.preprocessing, self.max_pixels,
                              self.num_workers)

    def setup(self, stage: str | None = None) -> None:
        if self._datasets:
            return
        for split, samples in self._splits().items():
            if self.cache_dir is None:
                self._datasets[split] = DecodedImages(samples, self.preprocessing, self.max_pixels)
            else:
                cached = open_image_cache(self._cache_path(samples), samples, self.preprocessing)
                self._datasets[split] = CachedImages(cached, samples)
        fit, held_out = fit_datasets(self._datasets["train"], self.holdout, self.augment)
        self._datasets["fit"] = fit
        self._datasets["validate"] = self._datasets["val"] if held_out is None else held_out

    def _loader(self, split: str, order: Order) -> DataLoader:
        # Reading the cache costs next to nothing: worker processes would only add overhead.
        workers = self.num_workers if self.cache_dir is None else 0
        return make_loader(self._datasets[split], self.batch_size, order, self.seed, workers,
                           **process_share(self.trainer))

    def train_dataloader(self) -> DataLoader:
        return self._loader("fit", "shuffled")

    def val_dataloader(self) -> DataLoader:
        return self._loader("validate", "each_once")

    def predict_dataloader(self) -> list[DataLoader]:
        return [self._loader(split, "padded") for split in self.predict_splits]

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        x, y, index = batch
        x = self.preprocessing.normalize(x)
        return (x.contiguous(memory_format=torch.channels_last) if self.channels_last else x), y, index


class FeatureDataModule(L.LightningDataModule):
    """Cached backbone features of a frozen experiment, batched like the images they replace.

    Loaders are built by `make_loader` like MonkeyDataModule's, so with the same seed the
    head sees the same batches in the same order as on the full network. Each dataset
    holds (features, labels, sample indices); `holdout` as in MonkeyDataModule.
    """

    def __init__(self, train: TensorDataset, val: TensorDataset, batch_size: int, seed: int,
                 holdout: Sequence[int] = ()) -> None:
        super().__init__()
        self.train = train
        self.val = val
        self.batch_size = batch_size
        self.seed = seed
        self.fit_data, held_out = fit_datasets(train, holdout)
        self.validate_data = val if held_out is None else held_out

    def _loader(self, dataset: Dataset, order: Order) -> DataLoader:
        return make_loader(dataset, self.batch_size, order, self.seed, **process_share(self.trainer))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.fit_data, "shuffled")

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.validate_data, "each_once")

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.val, "padded")
