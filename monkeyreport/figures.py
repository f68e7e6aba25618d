"""Every drawing of the report, with Spanish labels, saved atomically at print resolution."""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from matplotlib.ticker import ScalarFormatter  # noqa: E402

from monkeyreport import spanish_format  # noqa: E402
from monkeyreport.results import ModelSummary, atomic_path  # noqa: E402

DPI = 200
JPEG_QUALITY = 90
SPLIT_TITLES = {"training": "Entrenamiento", "validation": "Validación"}
SPLIT_COLORS = {"training": "#3b6ea5", "validation": "#d08a2c"}

sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)


def _spanish_ticks(fig: Figure) -> None:
    """Numeric tick labels in the report's number style (decimal comma, grouping)."""
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if isinstance(axis.get_major_formatter(), ScalarFormatter):
                axis.set_major_formatter(spanish_format.axis_formatter())


def save(fig: Figure, path: Path) -> None:
    """Write a figure atomically and release its memory: RGB without alpha (the PDF then
    embeds it without a separate mask), PNG for drawings, JPEG for a `.jpg` path
    (photographs, which the PDF embeds as they are)."""
    _spanish_ticks(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    image = Image.open(buffer).convert("RGB")
    with atomic_path(path) as tmp:
        if path.suffix == ".jpg":
            image.save(tmp, format="JPEG", quality=JPEG_QUALITY)
        else:
            image.save(tmp, format="PNG")


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
    # Square cells (the species names sit outside them, kept by bbox_inches="tight").
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.6 * ncols, 1.6 * len(rows)), squeeze=False)
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
        row_axes[0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=13, style="italic")
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


# ----------------------------------------------------------------------------- report figures
# Drawn by `render`; each is redrawn only when the digest of its inputs changed.

from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

def _box(ax, x: float, y: float, w: float, h: float, text: str, color: str,
         fontsize: float = 9, text_color: str = "black") -> None:
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.06",
                                linewidth=1.0, edgecolor="#333333", facecolor=color))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, color=text_color, wrap=True)


def _arrow(ax, start: tuple[float, float], end: tuple[float, float], color: str = "#333333") -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, linewidth=1.2,
                                 color=color, shrinkA=0, shrinkB=0))


def _canvas(width: float, height: float, xlim: tuple[float, float], ylim: tuple[float, float]):
    fig, ax = plt.subplots(figsize=(width, height))
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_axis_off()
    return fig, ax


def cnn_schematic(path: Path) -> None:
    """Figura 1: input -> convolution -> pooling -> flatten -> fully connected -> output."""
    fig, ax = _canvas(10, 3.0, (0, 10.6), (0, 3))
    steps = [
        ("Imagen de\nentrada\n3 × H × W", "#e8e8e8"),
        ("Convolución\n+ ReLU\n(mapas de\ncaracterísticas)", "#cfe0f3"),
        ("Pooling\n(reducción\nespacial)", "#d9ecd0"),
        ("Convolución\n+ ReLU", "#cfe0f3"),
        ("Pooling", "#d9ecd0"),
        ("Flatten\n(vector)", "#f6e3c6"),
        ("Fully\nconnected", "#f3d0d0"),
        ("Salida\n(10 clases,\nsoftmax)", "#e8e8e8"),
    ]
    xs = np.linspace(0.7, 9.9, len(steps))
    for i, (x, (text, color)) in enumerate(zip(xs, steps)):
        _box(ax, x, 1.6, 1.05, 1.5, text, color, fontsize=8)
        if i:
            _arrow(ax, (xs[i - 1] + 0.55, 1.6), (x - 0.55, 1.6))
    ax.annotate("", xy=(xs[4] + 0.5, 0.55), xytext=(xs[1] - 0.5, 0.55),
                arrowprops=dict(arrowstyle="-", color="#3b6ea5", linewidth=1.5))
    ax.text((xs[1] + xs[4]) / 2, 0.3, "Extracción de características", ha="center", fontsize=9,
            color="#3b6ea5")
    ax.annotate("", xy=(xs[6] + 0.5, 0.55), xytext=(xs[5] - 0.5, 0.55),
                arrowprops=dict(arrowstyle="-", color="#a53b3b", linewidth=1.5))
    ax.text((xs[5] + xs[6]) / 2, 0.3, "Clasificación", ha="center", fontsize=9, color="#a53b3b")
    save(fig, path)


def transfer_learning_scheme(path: Path) -> None:
    """Figura 5: a backbone pre-trained on ImageNet reused with a new head for 10 species."""
    fig, ax = _canvas(10, 4.2, (0, 10), (0, 4.4))
    ax.text(0.2, 4.1, "Tarea de origen: ImageNet (1000 clases)", fontsize=10, weight="bold")
    _box(ax, 1.2, 3.2, 1.8, 0.9, "Imágenes de\nImageNet", "#e8e8e8", 8.5)
    _box(ax, 4.2, 3.2, 3.2, 0.9, "Backbone convolucional\n(pesos aprendidos)", "#cfe0f3", 8.5)
    _box(ax, 7.6, 3.2, 2.2, 0.9, "Clasificador original\n1000 clases", "#dddddd", 8.5)
    _arrow(ax, (2.1, 3.2), (2.6, 3.2))
    _arrow(ax, (5.8, 3.2), (6.5, 3.2))
    ax.text(0.2, 1.85, "Tarea de destino: 10 especies de monos", fontsize=10, weight="bold")
    _box(ax, 1.2, 1.15, 1.8, 0.9, "Imágenes de\nmonos", "#e8e8e8", 8.5)
    _box(ax, 4.2, 1.15, 3.2, 0.9, "Backbone transferido\ncongelado o ajustado (fine-tuning)",
         "#cfe0f3", 8.5)
    _box(ax, 7.6, 1.15, 2.2, 0.9, "Cabeza nueva\nLinear → ReLU → Linear\n(10 clases)", "#f3d0d0", 8.5)
    _arrow(ax, (2.1, 1.15), (2.6, 1.15))
    _arrow(ax, (5.8, 1.15), (6.5, 1.15))
    _arrow(ax, (4.2, 2.72), (4.2, 1.63), color="#3b6ea5")
    ax.text(4.35, 2.35, "se copian los pesos", fontsize=8.5, color="#3b6ea5", va="center")
    ax.text(7.6, 2.35, "se descarta y se reemplaza", fontsize=8.5, color="#a53b3b", ha="center",
            va="center")
    ax.text(5.0, 0.2, "Backbone congelado: solo se entrena la cabeza.   "
            "Fine-tuning: se entrenan todas las capas.", ha="center", fontsize=8.5, style="italic")
    save(fig, path)


def _format_params(n: int) -> str:
    if n >= 1_000_000:
        return spanish_format.millions(n)
    if n >= 1_000:
        return f"{spanish_format.decimal(n / 1e3, 1)} k"
    return spanish_format.number(n)


_SHORT_NAMES = {"DepthwiseSeparableConv": "DS-Conv", "InvertedResidual": "MBConv",
                "BatchNormAct2d": "BN", "BatchNorm2d": "BN", "SelectAdaptivePool2d": "GlobalPool",
                "AdaptiveAvgPool2d": "AdaptiveAvgPool", "BasicBlock": "BasicBlock"}


def _short_layer(layer: str) -> str:
    for long, short in _SHORT_NAMES.items():
        layer = layer.replace(long, short)
    return layer


def architecture_diagram(summary: ModelSummary, path: Path) -> None:
    """Figuras 2-4: the stages of an instantiated model with output shape and parameters."""
    stages = summary.stages
    ncols = 4
    nrows = (len(stages) + 1 + ncols - 1) // ncols  # +1 for the input box
    fig, ax = _canvas(10, 1.35 * nrows + 0.2, (0, ncols * 2.5), (-(nrows - 0.4) * 1.35, 0.75))
    boxes = [("Entrada", "×".join(map(str, summary.input_shape)), "", "input")]
    boxes += [(_short_layer(s.layer), "×".join(map(str, s.output_shape)), _format_params(s.params) + " parám.",
               s.group) for s in stages]
    colors = {"input": "#e8e8e8", "backbone": "#cfe0f3", "head": "#f3d0d0"}
    centers = []
    for i, (layer, shape, params, group) in enumerate(boxes):
        r, c = divmod(i, ncols)
        x, y = 1.25 + c * 2.5, -r * 1.35
        centers.append((x, y))
        text = f"{layer}\n{shape}" + (f"\n{params}" if params else "")
        _box(ax, x, y, 2.0, 0.95, text, colors[group], fontsize=7.5)
    for (x0, y0), (x1, y1) in zip(centers, centers[1:]):
        if y0 == y1:
            _arrow(ax, (x0 + 1.0, y0), (x1 - 1.0, y1))
        else:
            _arrow(ax, (x0, y0 - 0.48), (x1 + 0.4, y1 + 0.48), color="#888888")
    save(fig, path)


def confusion_matrices(panels: Sequence[tuple[str, Sequence[Sequence[int]]]], names: Sequence[str],
                       path: Path) -> None:
    """Figuras 8-11: one heat map per experiment, species on both axes."""
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(4.8 * n, 4.7), squeeze=False)
    for ax, (title, matrix) in zip(axes[0], panels):
        m = np.asarray(matrix)
        sns.heatmap(m, annot=True, fmt="d", cmap="Blues", cbar=False, ax=ax, square=True,
                    annot_kws={"fontsize": 6.5}, xticklabels=names, yticklabels=names,
                    linewidths=0.3, linecolor="#ffffff")
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("Clase predicha")
        ax.set_ylabel("Clase real")
        ax.tick_params(axis="x", labelrotation=60, labelsize=7.5)
        ax.tick_params(axis="y", labelrotation=0, labelsize=7.5)
        for label in ax.get_xticklabels():
            label.set_ha("right")
            label.set_style("italic")
        for label in ax.get_yticklabels():
            label.set_style("italic")
    fig.tight_layout()
    save(fig, path)


def training_curves(histories: Sequence[tuple[str, Sequence[dict[str, float]]]], path: Path) -> None:
    """Loss and validation accuracy / macro F1 per epoch, one column per experiment."""
    n = len(histories)
    ncols = min(4, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols, 2.6 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (title, rows) in zip(axes.flat, histories):
        ax.set_axis_on()
        epochs = [r["epoch"] for r in rows]
        ax.plot(epochs, [r["train_loss"] for r in rows], "o-", ms=3, label="Pérdida entren.")
        ax.plot(epochs, [r["val_loss"] for r in rows], "s-", ms=3, label="Pérdida valid.")
        ax.set_xlabel("Época", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.xaxis.get_major_locator().set_params(integer=True)
        twin = ax.twinx()
        twin.plot(epochs, [r["val_accuracy"] for r in rows], "^--", ms=3, color="#2a9d5c",
                  label="Accuracy valid.")
        twin.set_ylim(0, 1)
        twin.tick_params(labelsize=7)
    handles = [*axes.flat[0].get_legend_handles_labels()[0]]
    labels = [*axes.flat[0].get_legend_handles_labels()[1]]
    from matplotlib.lines import Line2D

    handles.append(Line2D([], [], marker="^", ls="--", color="#2a9d5c"))
    labels.append("Accuracy valid. (eje derecho)")
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    save(fig, path)


def seed_values(points: Sequence[tuple[str, Sequence[tuple[int, float, float]]]], path: Path) -> None:
    """Accuracy and macro F1 of every seed (dots) and their mean (a bar) per experiment."""
    fig, axes = plt.subplots(1, 2, figsize=(7.2, 0.45 * len(points) + 1.4), sharey=True)
    labels = [label for label, _ in points]
    for ax, column, title in ((axes[0], 1, "Accuracy"), (axes[1], 2, "Macro F1")):
        for row, (_, seeds) in enumerate(points):
            values = [s[column] for s in seeds]
            ax.plot(values, [row] * len(values), "o", ms=5, alpha=0.8, color="#1f6fb2")
            mean = sum(values) / len(values)
            ax.plot([mean, mean], [row - 0.3, row + 0.3], "-", lw=2, color="#333333")
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(labels)), labels)
    axes[0].invert_yaxis()
    fig.tight_layout()
    save(fig, path)


# ----------------------------------------------------------------------------- interpretation
# Drawn by the interpretation stage (interpret.py), after training; render only reads them.

LEAK_COLOR = "#c0392b"


def _photo_axis(ax, image, frame: str | None = None) -> None:
    ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(frame is not None)
        if frame:
            spine.set_edgecolor(frame)
            spine.set_linewidth(3)


def top_losses_gallery(cells: Sequence[tuple[Image.Image, str, str, float, bool]], path: Path,
                       ncols: int = 4) -> None:
    """The validation images with the highest loss: true and predicted species, predicted
    probability; images with a copy in training framed in red and marked."""
    nrows = max(1, math.ceil(len(cells) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.3 * ncols, 2.95 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (image, true, predicted, probability, leaked) in zip(axes.flat, cells):
        ax.set_axis_on()
        _photo_axis(ax, _center_square(image), LEAK_COLOR if leaked else None)
        label = (f"Real: $\\it{{{_math_text(true)}}}$\nPred.: $\\it{{{_math_text(predicted)}}}$\n"
                 f"p = {spanish_format.decimal(probability, 2)}")
        if leaked:
            label += "\n(copia en entrenamiento)"
        ax.set_xlabel(label, fontsize=7.5, color=LEAK_COLOR if leaked else "black", linespacing=1.3)
    fig.subplots_adjust(wspace=0.08, hspace=0.42)
    save(fig, path)


def _math_text(text: str) -> str:
    """A species name inside $\\it{...}$: spaces kept."""
    return text.replace(" ", "\\ ")


def grad_cam_grid(species: Sequence[str], images: Sequence[np.ndarray],
                  columns: Sequence[tuple[str, Sequence[np.ndarray], Sequence[tuple[str, float]]]],
                  path: Path, per_block: int = 5) -> None:
    """One validation image per species (its name above) with the Grad-CAM heat map of each
    model over it, one row per model, and the model's prediction and probability below.
    `images` (the plain crops) are not drawn: the heat map keeps the image visible."""
    blocks = [range(i, min(i + per_block, len(species))) for i in range(0, len(species), per_block)]
    rows_per_block = len(columns) + 1  # the last row of a block: a spacer before the next
    nrows = rows_per_block * len(blocks) - 1
    ratios = ([1.0] * len(columns) + [0.1]) * len(blocks)
    fig, axes = plt.subplots(nrows, per_block, figsize=(1.6 * per_block, 2.0 * sum(ratios[:nrows])),
                             squeeze=False, gridspec_kw={"height_ratios": ratios[:nrows]})
    for ax in axes.flat:
        ax.set_axis_off()
    for b, block in enumerate(blocks):
        top = b * rows_per_block
        for c, k in enumerate(block):
            for r, (title, overlays, predicted) in enumerate(columns):
                ax = axes[top + r, c]
                ax.set_axis_on()
                _photo_axis(ax, overlays[k])
                if r == 0:
                    ax.set_title(species[k], fontsize=8, style="italic")
                name, probability = predicted[k]
                ax.set_xlabel(f"Pred. ({spanish_format.decimal(probability, 2)}):\n$\\it{{{_math_text(name)}}}$",
                              fontsize=7.5, linespacing=1.2)
        for r, (title, _, _) in enumerate(columns):
            # A long row title (a recipe's name) on two lines, or it runs into the next row's.
            axes[top + r, 0].set_ylabel("\n".join(textwrap.wrap(title, 20)), fontsize=8.5, weight="bold")
    fig.subplots_adjust(wspace=0.06, hspace=0.42)
    save(fig, path)


def leakage_pairs(cells: Sequence[tuple[Image.Image, Image.Image, str, str, str]], path: Path) -> None:
    """Training/validation duplicate pairs side by side, two pairs per row."""
    per_row = 2
    nrows = max(1, math.ceil(len(cells) / per_row))
    fig, axes = plt.subplots(nrows, 2 * per_row, figsize=(2.3 * 2 * per_row, 2.75 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i, (train, val, species, train_name, val_name) in enumerate(cells):
        r, c = divmod(i, per_row)
        for j, (image, split, name) in enumerate(((train, "Entrenamiento", train_name),
                                                 (val, "Validación", val_name))):
            ax = axes[r, 2 * c + j]
            ax.set_axis_on()
            _photo_axis(ax, _center_square(image), SPLIT_COLORS["training" if j == 0 else "validation"])
            ax.set_title(f"{split}\n{name}", fontsize=8)
            if j == 0:
                ax.set_xlabel(f"$\\it{{{_math_text(species)}}}$", fontsize=8, loc="right")
                ax.xaxis.set_label_coords(1.03, -0.05)
                ax.xaxis.label.set_ha("center")
    fig.subplots_adjust(wspace=0.06, hspace=0.35)
    save(fig, path)
