"""The torch side of the dataset layer: a Dataset over probed files and a DataModule.

Kept apart from `data.py` so that the EDA and the renderer never pay for importing torch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from monkeyreport.data import DatasetLayout, ImageRecord, load_rgb


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

    def transform(self) -> v2.Compose:
        return v2.Compose([
            v2.ToImage(),
            v2.Resize(self.resize, antialias=True),
            v2.CenterCrop(self.crop),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(self.mean, self.std),
        ])


class ImageDataset(Dataset):
    """Decodes each sample to RGB (reduced-scale JPEG decoding) and applies the transform."""

    def __init__(self, samples: list[Sample], preprocessing: Preprocessing, max_pixels: int) -> None:
        self.samples = samples
        self.preprocessing = preprocessing
        self.transform = preprocessing.transform()
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[index]
        image = load_rgb(sample.path, self.preprocessing.resize, self.max_pixels)
        return self.transform(image), sample.label


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
    """Training and validation loaders over the usable images of the dataset."""

    def __init__(self, train: list[Sample], val: list[Sample], preprocessing: Preprocessing,
                 batch_size: int, num_workers: int, max_pixels: int) -> None:
        super().__init__()
        self.train_samples = train
        self.val_samples = val
        self.preprocessing = preprocessing
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.max_pixels = max_pixels

    def _loader(self, samples: list[Sample], shuffle: bool) -> DataLoader:
        return DataLoader(
            ImageDataset(samples, self.preprocessing, self.max_pixels),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_samples, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_samples, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.val_samples, shuffle=False)
