"""The torch side of the dataset layer: datasets over probed files, the decoded-image cache,
and the DataModule.

Kept apart from `data.py` so that the EDA and the renderer never pay for importing torch.

Preprocessing is split in two. Resize and centre crop are deterministic, so they run once
per image into a uint8 cache (a memory-mapped file under the runs folder); conversion to
float and normalisation run on the batch, on the training device, so one cache serves
every backbone whatever its normalisation statistics.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, SequentialSampler, TensorDataset
from torchvision.transforms import v2

from monkeyreport import results
from monkeyreport.config import stable_hash
from monkeyreport.data import DatasetLayout, ImageRecord, load_rgb

CACHE_SCHEMA = 1


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

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[index]
        return self.transform(load_rgb(sample.path, self.resize, self.max_pixels)), sample.label


class CachedImages(Dataset):
    """Reads decoded crops from the uint8 cache."""

    def __init__(self, images: np.ndarray, samples: list[Sample]) -> None:
        self.images = images
        self.labels = [s.label for s in samples]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(np.array(self.images[index])), self.labels[index]


def image_cache(samples: list[Sample], preprocessing: Preprocessing, cache_dir: Path,
                dataset_fingerprint: str, max_pixels: int, num_workers: int) -> np.ndarray:
    """The crops of `samples` as a read-only (N, 3, crop, crop) uint8 memmap, built if needed.

    The file name is a hash of the dataset fingerprint, the crop settings and the sample
    list, so a changed image or setting gives a new cache and an unchanged one is reused.
    """
    key = stable_hash(CACHE_SCHEMA, dataset_fingerprint, preprocessing.resize, preprocessing.crop,
                      max_pixels, [s.relpath for s in samples])
    path = cache_dir / f"images-{key}.u8"
    shape = (len(samples), 3, preprocessing.crop, preprocessing.crop)
    if not path.is_file() or path.stat().st_size != int(np.prod(shape)):
        _build_image_cache(path, shape, samples, preprocessing, max_pixels, num_workers)
    return np.memmap(path, dtype=np.uint8, mode="r", shape=shape)


def _build_image_cache(path: Path, shape: tuple[int, ...], samples: list[Sample],
                       preprocessing: Preprocessing, max_pixels: int, num_workers: int) -> None:
    loader = make_loader(DecodedImages(samples, preprocessing, max_pixels), 64, shuffle=False, seed=0,
                         num_workers=num_workers)
    with results.atomic_path(path) as tmp:
        images = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
        start = 0
        for batch, _ in loader:
            images[start:start + len(batch)] = batch.numpy()
            start += len(batch)
        images.flush()
        del images
    results.write_json(path.with_suffix(".json"), {"shape": list(shape),
                                                   "files": [s.relpath for s in samples]})


class EpochShuffle(Sampler[int]):
    """A permutation that depends only on (seed, epoch), like DistributedSampler's.

    Lightning calls `set_epoch` before every training epoch, so the order of epoch k is
    the same whether the run decodes in worker processes, reads a cache, or resumed from
    a checkpoint, and however often a loader is iterated.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int,
                num_workers: int = 0) -> DataLoader:
    """A DataLoader whose randomness is its own: the order comes from `EpochShuffle` and
    worker seeds from a private generator, so the global RNG (weight initialisation,
    dropout) is untouched by data loading."""
    sampler = EpochShuffle(len(dataset), seed) if shuffle else SequentialSampler(dataset)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      persistent_workers=num_workers > 0, pin_memory=torch.cuda.is_available(),
                      generator=torch.Generator().manual_seed(seed + 1))


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

    With `cache_dir`, images are decoded once into the image cache at setup; without it
    (the plain path), every epoch decodes every JPEG again.
    """

    def __init__(self, train: list[Sample], val: list[Sample], preprocessing: Preprocessing,
                 batch_size: int, num_workers: int, max_pixels: int,
                 cache_dir: Path | None = None, dataset_fingerprint: str = "", seed: int = 0) -> None:
        super().__init__()
        self.seed = seed
        self.train_samples = train
        self.val_samples = val
        self.preprocessing = preprocessing
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.max_pixels = max_pixels
        self.cache_dir = cache_dir
        self.dataset_fingerprint = dataset_fingerprint
        self._datasets: dict[str, Dataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self._datasets:
            return
        for split, samples in (("train", self.train_samples), ("val", self.val_samples)):
            if self.cache_dir is None:
                self._datasets[split] = DecodedImages(samples, self.preprocessing, self.max_pixels)
            else:
                cached = image_cache(samples, self.preprocessing, self.cache_dir,
                                     self.dataset_fingerprint, self.max_pixels, self.num_workers)
                self._datasets[split] = CachedImages(cached, samples)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        # Reading the cache costs next to nothing: worker processes would only add overhead.
        workers = self.num_workers if self.cache_dir is None else 0
        return make_loader(self._datasets[split], self.batch_size, shuffle, self.seed, workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def unshuffled_train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=False)

    def on_after_batch_transfer(self, batch: tuple[torch.Tensor, torch.Tensor],
                                dataloader_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        return self.preprocessing.normalize(x), y


class FeatureDataModule(L.LightningDataModule):
    """Cached backbone features of a frozen experiment, batched like the images they replace.

    Loaders are built by `make_loader` like MonkeyDataModule's, so with the same seed the
    head sees the same batches in the same order as on the full network.
    """

    def __init__(self, train: TensorDataset, val: TensorDataset, batch_size: int, seed: int) -> None:
        super().__init__()
        self.train = train
        self.val = val
        self.batch_size = batch_size
        self.seed = seed

    def train_dataloader(self) -> DataLoader:
        return make_loader(self.train, self.batch_size, shuffle=True, seed=self.seed)

    def val_dataloader(self) -> DataLoader:
        return make_loader(self.val, self.batch_size, shuffle=False, seed=self.seed)

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()
