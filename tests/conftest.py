"""Shared fixtures: the real shared dataset and small generated datasets."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASET = Path(os.environ.get("MONKEYREPORT_TEST_DATA", REPO.parent / "shared" / "datasets" / "monkeys"))

LABELS_TEXT = (
    "Label,  Latin Name           , Common Name                   , Train Images , Validation Images\r\n"
    "n0   , alouatta_palliata\t , mantled_howler                , 131          , 26\r\n"
    "n1   , erythrocebus_patas\t , patas_monkey                  , 139          , 28\r\n"
    "n2   , cacajao_calvus\t     , bald_uakari                   , 137          , 27\r\n"
    "\r\n\r\n\r\n"
)


# CI sets this: there, a missing dataset is a failure, never a silent skip.
REQUIRE_DATASET = os.environ.get("MONKEYREPORT_REQUIRE_TEST_DATA") == "1"


@pytest.fixture(scope="session")
def shared_dataset() -> Path:
    """The real dataset (../shared/datasets/monkeys or $MONKEYREPORT_TEST_DATA).

    A clone without it skips the tests that need it; with MONKEYREPORT_REQUIRE_TEST_DATA=1
    its absence fails them."""
    if not (SHARED_DATASET / "training").is_dir():
        message = f"shared dataset not found at {SHARED_DATASET}; set MONKEYREPORT_TEST_DATA"
        if REQUIRE_DATASET:
            pytest.fail(message)
        pytest.skip(message)
    return SHARED_DATASET


def noise_image(seed: int, size: tuple[int, int] = (96, 64), mode: str = "RGB") -> Image.Image:
    """A distinct picture per seed (smooth blobs, so perceptual hashes differ between seeds)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
    image = Image.fromarray(small, "RGB").resize(size, Image.Resampling.BICUBIC)
    return image.convert(mode) if mode != "RGB" else image


def make_dataset(root: Path, per_class: tuple[int, int] = (4, 2), doubled: bool = True,
                 labels: bool = True, classes: tuple[str, ...] = ("n0", "n1", "n2")) -> Path:
    """A tiny dataset in Kaggle layout with distinct JPEGs; returns its root."""
    seed = 0
    for split, count in zip(("training", "validation"), per_class):
        split_dir = root / split / split if doubled else root / split
        for code in classes:
            folder = split_dir / code
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                seed += 1
                noise_image(seed).save(folder / f"{code}{split[0]}{i:03d}.jpg", quality=90)
    if labels:
        (root / "monkey_labels.txt").write_bytes(LABELS_TEXT.encode())
    return root


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "monkeys")


def wait_for_file(path: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    """Wait until `process` has written `path`; fail if it ended first or time ran out."""
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None and time.monotonic() < deadline, f"{path} was never written"
        time.sleep(0.05)
