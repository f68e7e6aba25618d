"""Every drawing of the report, with Spanish labels, saved atomically at print resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from monkeyreport.results import atomic_path  # noqa: E402

DPI = 200
SPLIT_TITLES = {"training": "Entrenamiento", "validation": "Validación"}
SPLIT_COLORS = {"training": "#3b6ea5", "validation": "#d08a2c"}

sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)


def save(fig: Figure, path: Path) -> None:
    """Write a figure as PNG atomically and release its memory."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def class_distribution(counts: dict[str, dict[str, int]], names: dict[str, str], path: Path) -> None:
    """Figura 6: images per class, training on the left and validation on the right."""
    fig, axes = plt.subplots(1, len(counts), figsize=(11, 4.2), sharey=False)
    for ax, (split, per_class) in zip(np.atleast_1d(axes), counts.items()):
        labels = [f"{code}\n{names.get(code, code)}" for code in per_class]
        values = list(per_class.values())
        bars = ax.bar(range(len(values)), values, color=SPLIT_COLORS.get(split, "#555555"))
        ax.bar_label(bars, fontsize=7, padding=1)
        ax.set_xticks(range(len(values)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{SPLIT_TITLES.get(split, split)} ({sum(values)} imágenes)")
        ax.set_ylabel("Número de imágenes")
        ax.margins(y=0.12)
    fig.tight_layout()
    save(fig, path)


def sample_grid(rows: Sequence[tuple[str, Sequence[Image.Image]]], path: Path) -> None:
    """Figura 7: several training images per class, one row per species."""
    ncols = max((len(images) for _, images in rows), default=1)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.6 * ncols + 1.9, 1.6 * len(rows)),
                             squeeze=False)
    for (name, images), row_axes in zip(rows, axes):
        for ax in row_axes:
            ax.set_axis_off()
        for ax, image in zip(row_axes, images):
            ax.imshow(_center_square(image))
        row_axes[0].set_axis_on()
        row_axes[0].set_xticks([])
        row_axes[0].set_yticks([])
        for spine in row_axes[0].spines.values():
            spine.set_visible(False)
        row_axes[0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9, style="italic")
    fig.subplots_adjust(wspace=0.04, hspace=0.06)
    save(fig, path)


def _center_square(image: Image.Image, side: int = 224) -> Image.Image:
    w, h = image.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return image.crop(box).resize((side, side), Image.Resampling.BILINEAR)


def image_sizes(sizes: dict[str, list[tuple[int, int]]], path: Path) -> None:
    """Width against height of every usable image, coloured by split."""
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for split, points in sizes.items():
        if not points:
            continue
        w, h = zip(*points)
        ax.scatter(w, h, s=10, alpha=0.5, label=f"{SPLIT_TITLES.get(split, split)} ({len(points)})",
                   color=SPLIT_COLORS.get(split))
    ax.set_xlabel("Ancho (píxeles)")
    ax.set_ylabel("Alto (píxeles)")
    ax.set_title("Tamaño de las imágenes")
    ax.legend(loc="best")
    fig.tight_layout()
    save(fig, path)
