"""Every drawing of the report, saved atomically at print resolution.

Figures are drawn at the size they print: report.css prints an image at `DPI` pixels per
inch (`image-resolution`), within the text block, so a font of 8 pt here is 8 pt on the A4
page. Each drawing fits `TEXT_WIDTH` × `MAX_HEIGHT` and writes no text under `MIN_FONT`
(tests/test_figure_text.py measures both on the drawn files). Every word drawn comes from
the templates' figures.toml (`words`, see figure_words.py); species come as named by the
species table; numbers go through spanish_format.
"""

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
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402
from matplotlib.ticker import ScalarFormatter  # noqa: E402
from PIL import Image  # noqa: E402

from monkeyreport import spanish_format  # noqa: E402
from monkeyreport.results import ModelSummary, atomic_path  # noqa: E402

DPI = 200  # report.css prints the images at this resolution: `image-resolution: 200dpi`
TEXT_WIDTH = 17 / 2.54  # inches: the A4 page's text block (21 cm less report.css's 2 cm margins)
MAX_HEIGHT = 19 / 2.54  # inches: report.css's `max-height` of a figure's image
MIN_FONT = 7.0  # pt: the smallest text of any figure as printed
WIDTH = TEXT_WIDTH - 0.15  # a full-width drawing, leaving room for save's padding
JPEG_QUALITY = 90
SPLIT_COLORS = {"training": "#3b6ea5", "validation": "#d08a2c"}

sns.set_theme(context="paper", style="whitegrid", rc={
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7.5, "ytick.labelsize": 7.5,
    "legend.fontsize": 7.5, "legend.title_fontsize": 8, "figure.titlesize": 8.5})


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
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.03, facecolor="white")
    plt.close(fig)
    image = Image.open(buffer).convert("RGB")
    with atomic_path(path) as tmp:
        if path.suffix == ".jpg":
            image.save(tmp, format="JPEG", quality=JPEG_QUALITY, dpi=(DPI, DPI))
        else:
            image.save(tmp, format="PNG", dpi=(DPI, DPI))


def italic(text: str) -> str:
    """A species name in italics inside a label (mathtext; spaces kept)."""
    escaped = "".join("\\" + c if c in "_$%&#{}" else c for c in text).replace(" ", "\\ ")
    return f"$\\it{{{escaped}}}$"


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False)) or text


# ----------------------------------------------------------------------------- data figures
# Drawn by the eda stage (eda.py).


def class_distribution(counts: dict[str, dict[str, int]], names: dict[str, str], words: dict[str, dict[str, str]],
                       path: Path) -> None:
    """Images per class, training on the left and validation on the right, one bar per
    species (its name from the species table, its code in brackets)."""
    codes = list(next(iter(counts.values())))
    fig, axes = plt.subplots(1, len(counts), figsize=(WIDTH, 0.2 * len(codes) + 0.75), sharey=True,
                             squeeze=False)
    for ax, (split, per_class) in zip(axes[0], counts.items()):
        values = [per_class[code] for code in codes]
        bars = ax.barh(range(len(values)), values, color=SPLIT_COLORS.get(split, "#555555"), height=0.7)
        ax.bar_label(bars, fontsize=7, padding=2)
        ax.set_title(words["class_distribution"]["title"].format(split=words["splits"].get(split, split),
                                                                  n=sum(values)))
        ax.set_xlabel(words["class_distribution"]["x"])
        ax.margins(x=0.15)
        ax.grid(axis="y", visible=False)
    axes[0, 0].set_yticks(range(len(codes)), [f"{italic(names.get(c, c))} ({c})" for c in codes])
    axes[0, 0].invert_yaxis()
    fig.tight_layout(w_pad=1.5)
    save(fig, path)


def sample_grid(rows: Sequence[tuple[str, Sequence[Image.Image]]], path: Path) -> None:
    """Several training images per class, one row per species, its name on the left."""
    ncols = max((len(images) for _, images in rows), default=1)
    names_width = 1.4  # inches for the species' names
    cell = min(1.0, (MAX_HEIGHT - 0.1) / (1.04 * len(rows)), (WIDTH - names_width) / (1.04 * ncols))
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.04 * cell * ncols, 1.04 * cell * len(rows)),
                             squeeze=False)
    for (name, images), row_axes in zip(rows, axes):
        for ax in row_axes:
            ax.set_axis_off()
        for ax, image in zip(row_axes, images):
            ax.imshow(_center_square(image))
        row_axes[0].set_axis_on()
        row_axes[0].set_xticks([])
        row_axes[0].set_yticks([])
        row_axes[0].grid(False)
        for spine in row_axes[0].spines.values():
            spine.set_visible(False)
        row_axes[0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8, style="italic")
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1, wspace=0.04, hspace=0.04)
    save(fig, path)


def _center_square(image: Image.Image, side: int = 224) -> Image.Image:
    w, h = image.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return image.crop(box).resize((side, side), Image.Resampling.BILINEAR)


def image_sizes(sizes: dict[str, list[tuple[int, int]]], words: dict[str, dict[str, str]], path: Path) -> None:
    """Width against height of every usable image, coloured by split."""
    fig, ax = plt.subplots(figsize=(4.4, 3.1))
    for split, points in sizes.items():
        if not points:
            continue
        w, h = zip(*points)
        ax.scatter(w, h, s=6, alpha=0.5, color=SPLIT_COLORS.get(split),
                   label=words["image_sizes"]["legend"].format(split=words["splits"].get(split, split),
                                                               n=len(points)))
    ax.set_xlabel(words["image_sizes"]["x"])
    ax.set_ylabel(words["image_sizes"]["y"])
    ax.set_title(words["image_sizes"]["title"])
    ax.legend(loc="best")
    fig.tight_layout()
    save(fig, path)


# ----------------------------------------------------------------------------- report figures
# Drawn by the figures stage (report_figures.py).


def _box(ax, x: float, y: float, w: float, h: float, text: str, color: str, fontsize: float = 7.5) -> None:
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.01,rounding_size=0.05",
                                linewidth=0.8, edgecolor="#333333", facecolor=color))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, linespacing=1.15)


def _arrow(ax, start: tuple[float, float], end: tuple[float, float], color: str = "#333333") -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=8, linewidth=0.9,
                                 color=color, shrinkA=0, shrinkB=0))


def _canvas(width: float, height: float):
    """A blank figure whose data coordinates are inches from its lower left corner."""
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    return fig, ax


def cnn_schematic(words: dict[str, dict[str, str]], classes: int, path: Path) -> None:
    """Input -> convolution -> pooling -> flatten -> fully connected -> output."""
    w = words["cnn_schematic"]
    fig, ax = _canvas(WIDTH, 1.45)
    steps = [(w["input"], "#e8e8e8"), (w["convolution_first"], "#cfe0f3"), (w["pooling_first"], "#d9ecd0"),
             (w["convolution"], "#cfe0f3"), (w["pooling"], "#d9ecd0"), (w["flatten"], "#f6e3c6"),
             (w["dense"], "#f3d0d0"), (w["output"].format(classes=classes), "#e8e8e8")]
    box = 0.72
    xs = np.linspace(box / 2 + 0.02, WIDTH - box / 2 - 0.02, len(steps))
    for i, (x, (text, color)) in enumerate(zip(xs, steps)):
        _box(ax, x, 0.95, box, 0.9, text, color, fontsize=7)
        if i:
            _arrow(ax, (xs[i - 1] + box / 2 + 0.01, 0.95), (x - box / 2 - 0.01, 0.95))
    for first, last, text, color in ((1, 4, w["features"], "#3b6ea5"), (5, 6, w["classification"], "#a53b3b")):
        ax.plot([xs[first] - box / 2, xs[last] + box / 2], [0.4, 0.4], color=color, linewidth=1.2)
        ax.text((xs[first] + xs[last]) / 2, 0.3, text, ha="center", va="top", fontsize=7.5, color=color)
    save(fig, path)


def transfer_learning_scheme(words: dict[str, dict[str, str]], classes: int, path: Path) -> None:
    """A backbone pre-trained on ImageNet reused with a new head for the dataset's species."""
    w = words["transfer_learning"]
    fig, ax = _canvas(WIDTH, 2.95)
    (xi, wi), (xb, wb), (xh, wh) = (0.7, 1.3), (3.0, 2.3), (5.45, 1.9)  # centre and width of each column
    for y, title, images, backbone, head, color in (
            (2.15, w["source"], w["source_images"], w["backbone"], w["source_head"], "#dddddd"),
            (0.75, w["target"].format(classes=classes), w["target_images"], w["transferred"],
             w["target_head"].format(classes=classes), "#f3d0d0")):
        ax.text(0.05, y + 0.5, title, fontsize=8, weight="bold", va="center")
        for x, width, text, fill in ((xi, wi, images, "#e8e8e8"), (xb, wb, backbone, "#cfe0f3"), (xh, wh, head, color)):
            _box(ax, x, y, width, 0.62, text, fill, fontsize=7.5)
        _arrow(ax, (xi + wi / 2 + 0.01, y), (xb - wb / 2 - 0.01, y))
        _arrow(ax, (xb + wb / 2 + 0.01, y), (xh - wh / 2 - 0.01, y))
    _arrow(ax, (xb, 1.83), (xb, 1.07), color="#3b6ea5")
    ax.text(xb + 0.1, 1.62, w["copied"], fontsize=7.5, color="#3b6ea5", va="center")
    ax.text(xh, 1.62, w["replaced"], fontsize=7.5, color="#a53b3b", ha="center", va="center")
    ax.text(WIDTH / 2, 0.12, w["note"], ha="center", va="center", fontsize=7.5, style="italic")
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


def architecture_diagram(summary: ModelSummary, words: dict[str, dict[str, str]], path: Path) -> None:
    """The stages of an instantiated model with output shape and parameters, four per row."""
    w = words["architecture"]
    ncols, pitch_x, pitch_y, box_w, box_h = 4, WIDTH / 4, 0.85, 1.38, 0.62
    boxes = [(w["input"], "×".join(map(str, summary.input_shape)), "", "input")]
    boxes += [(_short_layer(s.layer), "×".join(map(str, s.output_shape)),
               w["params"].format(params=_format_params(s.params)), s.group) for s in summary.stages]
    nrows = math.ceil(len(boxes) / ncols)
    fig, ax = _canvas(WIDTH, pitch_y * nrows)
    colors = {"input": "#e8e8e8", "backbone": "#cfe0f3", "head": "#f3d0d0"}
    centers = []
    for i, (layer, shape, params, group) in enumerate(boxes):
        r, c = divmod(i, ncols)
        x, y = pitch_x * (c + 0.5), pitch_y * (nrows - r - 0.5)
        centers.append((x, y))
        _box(ax, x, y, box_w, box_h, "\n".join(t for t in (layer, shape, params) if t), colors[group])
    for (x0, y0), (x1, y1) in zip(centers, centers[1:]):
        if y0 == y1:
            _arrow(ax, (x0 + box_w / 2 + 0.01, y0), (x1 - box_w / 2 - 0.01, y1))
        else:
            _arrow(ax, (x0, y0 - box_h / 2 - 0.01), (x1 + 0.3, y1 + box_h / 2 + 0.01), color="#888888")
    save(fig, path)


def confusion_matrices(panels: Sequence[tuple[str, Sequence[Sequence[int]]]], names: Sequence[str],
                       words: dict[str, dict[str, str]], path: Path) -> None:
    """One heat map per experiment, two per row, species on both axes: their names on the
    left of each row and under every panel."""
    n = len(panels)
    ncols = min(n, 2)
    nrows = math.ceil(n / ncols)
    names_h = 1.45  # inches under and over a matrix: the slanted names, the axis label, the title
    side = min(2.45, (MAX_HEIGHT - 0.1) / nrows - names_h)  # of one matrix
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.45 + ncols * (side + 0.12), nrows * (side + names_h)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_visible(False)
            continue
        title, matrix = panels[i]
        sns.heatmap(np.asarray(matrix), annot=True, fmt="d", cmap="Blues", cbar=False, ax=ax, square=True,
                    annot_kws={"fontsize": 7}, xticklabels=[italic(s) for s in names],
                    yticklabels=[italic(s) for s in names], linewidths=0.3, linecolor="#ffffff")
        ax.set_title(_wrap(title, 40), fontsize=8)
        ax.tick_params(axis="both", labelsize=7, length=0, pad=2)
        ax.tick_params(axis="x", labelrotation=60)
        ax.tick_params(axis="y", labelrotation=0)
        for label in ax.get_xticklabels():
            label.set_ha("right")
            label.set_rotation_mode("anchor")
        if i % ncols:
            ax.tick_params(axis="y", labelleft=False)
        else:
            ax.set_ylabel(words["confusion"]["y"])
        ax.set_xlabel(words["confusion"]["x"])
    fig.tight_layout(w_pad=0.5, h_pad=0.6)
    save(fig, path)


def training_curves(histories: Sequence[tuple[str, Sequence[dict[str, float]]]], words: dict[str, dict[str, str]],
                    path: Path, holdout: bool = False) -> None:
    """Training and validation loss (left axis) and accuracy (right axis) per epoch, one panel
    per experiment, three per row; the training accuracy where history.csv has it (older
    runs lack it). With `holdout` selection the validation columns are the held-out training
    images, and the legend says so."""
    w = dict(words["curves"])
    if holdout:
        w["val_loss"], w["val_accuracy"] = w["holdout_loss"], w["holdout_accuracy"]
    trained = [[r.get("train_accuracy", math.nan) for r in rows] for _, rows in histories]
    with_train = any(math.isfinite(v) for values in trained for v in values)
    n = len(histories)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(WIDTH * ncols / 3, 1.75 * nrows + 0.45), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    styles = {"train_loss": ("o-", None), "val_loss": ("s-", None), "train_accuracy": ("v:", "#7b4fa0"),
              "val_accuracy": ("^--", "#2a9d5c")}
    for i, (ax, (title, rows), train_accuracy) in enumerate(zip(axes.flat, histories, trained)):
        ax.set_axis_on()
        epochs = [r["epoch"] for r in rows]
        for key in ("train_loss", "val_loss"):
            ax.plot(epochs, [r[key] for r in rows], styles[key][0], ms=2.5, lw=1)
        ax.set_title(_wrap(title, 36))
        ax.tick_params(labelsize=7)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if i + ncols >= n:  # the lowest panel of its column
            ax.set_xlabel(w["epoch"])
        if i % ncols == 0:
            ax.set_ylabel(w["loss"])
        twin = ax.twinx()
        if with_train:
            twin.plot(epochs, train_accuracy, styles["train_accuracy"][0], ms=2.5, lw=1,
                      color=styles["train_accuracy"][1])
        twin.plot(epochs, [r["val_accuracy"] for r in rows], styles["val_accuracy"][0], ms=2.5, lw=1,
                  color=styles["val_accuracy"][1])
        twin.set_ylim(0, 1)
        twin.grid(False)
        twin.tick_params(labelsize=7)
        if i % ncols == ncols - 1 or i == n - 1:
            twin.set_ylabel(w["accuracy"])
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    keys = ["train_loss", "val_loss", *(["train_accuracy"] if with_train else []), "val_accuracy"]
    handles = [Line2D([], [], marker=styles[k][0][0], ls=styles[k][0][1:], ms=3, lw=1,
                      color=styles[k][1] or colors[j]) for j, k in enumerate(keys)]
    legend_columns = 2
    fig.legend(handles, [w[k] for k in keys], loc="lower center", ncol=legend_columns, frameon=False)
    legend_rows = math.ceil(len(keys) / legend_columns)
    fig.tight_layout(rect=(0, (0.16 * legend_rows + 0.05) / fig.get_figheight(), 1, 1), w_pad=0.6)
    save(fig, path)


def seed_values(points: Sequence[tuple[str, Sequence[tuple[int, float, float]]]],
                words: dict[str, dict[str, str]], path: Path) -> None:
    """Accuracy and macro F1 of every seed (dots) and their mean (a bar) per experiment."""
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 0.3 * len(points) + 0.7), sharey=True)
    labels = [label for label, _ in points]
    for ax, column, title in ((axes[0], 1, words["seeds"]["accuracy"]), (axes[1], 2, words["seeds"]["macro_f1"])):
        for row, (_, seeds) in enumerate(points):
            values = [s[column] for s in seeds]
            ax.plot(values, [row] * len(values), "o", ms=4, alpha=0.8, color="#1f6fb2")
            mean = sum(values) / len(values)
            ax.plot([mean, mean], [row - 0.3, row + 0.3], "-", lw=1.5, color="#333333")
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(labels)), labels)
    axes[0].invert_yaxis()
    fig.tight_layout()
    save(fig, path)


def reliability_diagrams(panels: Sequence[tuple[str, dict]], words: dict[str, dict[str, str]], path: Path) -> None:
    """Reliability diagram of each experiment: per confidence bin, its accuracy (bar) and its
    mean confidence (dot) against the diagonal of perfect calibration, the ECE in the title.
    `panels`: (title, stats.json calibration of one run)."""
    w = words["reliability"]
    ncols = min(len(panels), 4)
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(min(WIDTH, 1.55 * ncols + 0.4), 2.0 * nrows + 0.35),
                             squeeze=False)
    for ax, (title, data) in zip(axes.flat, panels):
        filled = [b for b in data["bins"] if b["count"]]
        width = data["bins"][0]["upper"] - data["bins"][0]["lower"]
        ax.bar([b["lower"] + width / 2 for b in filled], [b["accuracy"] for b in filled], width=width * 0.9,
               color="#7aa6d6", edgecolor="#1f6fb2", linewidth=0.5)
        ax.plot([b["confidence"] for b in filled], [b["accuracy"] for b in filled], "o", ms=2.5, color="#333333")
        ax.plot([0, 1], [0, 1], "--", lw=0.8, color="#c0392b", label=w["ideal"])
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_title(_wrap(title, 24) + "\n" + w["ece"].format(ece=spanish_format.decimal(data["ece"], 3)),
                     fontsize=7.5)
        ax.tick_params(labelsize=7)
    for i, ax in enumerate(axes.flat):
        if i >= len(panels):
            ax.set_visible(False)
            continue
        if i + ncols >= len(panels):  # the lowest panel of its column
            ax.set_xlabel(w["x"])
        else:
            ax.tick_params(labelbottom=False)
        if i % ncols:
            ax.tick_params(labelleft=False)
        else:
            ax.set_ylabel(w["y"])
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", frameon=False)
    fig.tight_layout(rect=(0, 0.22 / fig.get_figheight(), 1, 1))
    save(fig, path)


# ----------------------------------------------------------------------------- interpretation
# Drawn by the interpretation stage (interpret.py), after training; render only reads them.

LEAK_COLOR = "#c0392b"


def _photo_axis(ax, image, frame: str | None = None) -> None:
    ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(frame is not None)
        if frame:
            spine.set_edgecolor(frame)
            spine.set_linewidth(2.5)


def top_losses_gallery(cells: Sequence[tuple[Image.Image, str, str, float, bool]],
                       words: dict[str, dict[str, str]], path: Path, ncols: int = 4) -> None:
    """The validation images with the highest loss: true and predicted species, predicted
    probability; images with a copy in training framed in red and marked."""
    w = words["top_losses"]
    nrows = max(1, math.ceil(len(cells) / ncols))
    cell = min(WIDTH / ncols - 0.12, (MAX_HEIGHT - 0.1) / nrows - 0.65)
    fig, axes = plt.subplots(nrows, ncols, figsize=(WIDTH, nrows * (cell + 0.65)), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (image, true, predicted, probability, leaked) in zip(axes.flat, cells):
        ax.set_axis_on()
        _photo_axis(ax, _center_square(image), LEAK_COLOR if leaked else None)
        label = w["label"].format(true=italic(true), predicted=italic(predicted),
                                  probability=spanish_format.decimal(probability, 2))
        if leaked:
            label += "\n" + w["leaked"]
        ax.set_xlabel(label, fontsize=7, color=LEAK_COLOR if leaked else "black", linespacing=1.25)
    fig.subplots_adjust(left=0, right=1, bottom=0.65 / (cell + 0.65) / nrows, top=1, wspace=0.1,
                        hspace=0.65 / cell)
    save(fig, path)


def grad_cam_grid(species: Sequence[str], images: Sequence[np.ndarray],
                  columns: Sequence[tuple[str, Sequence[np.ndarray],
                                      Sequence[tuple[str, float, bool, float | None, float | None]]]],
                  path: Path, words: dict[str, dict[str, str]], per_block: int = 5) -> None:
    """One validation image per species (its name above) with the Grad-CAM heat map of each
    model over it, one row per model; below each map, the model's prediction and probability,
    right or wrong (in red), the map's concentration and its agreement with the first row's
    map when given. `images` (the plain crops) are not drawn: the heat map keeps the image
    visible. The maps shrink as rows are added, so that the figure fits the page."""
    w = words["grad_cam"]
    blocks = [range(i, min(i + per_block, len(species))) for i in range(0, len(species), per_block)]
    rows = len(columns) * len(blocks)
    left, title_h, label_h, gap = 0.45, 0.2, 0.42, 0.1  # inches: row titles, species, facts, between blocks
    pitch = (WIDTH - left) / per_block
    side = min(pitch - 0.08, (MAX_HEIGHT - 0.1 - len(blocks) * (title_h + gap) - rows * label_h) / rows)
    height = len(blocks) * (title_h + gap) + rows * (side + label_h)
    fig = plt.figure(figsize=(WIDTH, height))
    # A row's title, turned, spans its maps and their facts: wrapped to that height.
    title_chars = max(10, int((side + label_h) * 72 / (0.58 * 7.5)))
    top = height
    for block in blocks:
        top -= title_h
        for r, (title, overlays, predicted) in enumerate(columns):
            for c, k in enumerate(block):
                x = left + c * pitch + (pitch - side) / 2
                ax = fig.add_axes((x / WIDTH, (top - side) / height, side / WIDTH, side / height))
                _photo_axis(ax, overlays[k])
                if r == 0:
                    ax.set_title(species[k], fontsize=7, style="italic", pad=3)
                name, probability, correct, concentration, agreement = predicted[k]
                facts = [w["empty"] if concentration is None else
                         w["concentration"].format(value=spanish_format.decimal(concentration, 2))]
                if agreement is not None:
                    facts.append(w["agreement"].format(value=spanish_format.decimal(agreement, 2)))
                prediction = w["prediction"].format(species=italic(name),
                                                    probability=spanish_format.decimal(probability, 2),
                                                    verdict=w["correct" if correct else "wrong"])
                ax.set_xlabel(f"{prediction}\n{' · '.join(facts)}", fontsize=7, linespacing=1.15, labelpad=2,
                              color="#111111" if correct else "#b3261e")
            fig.text(0.02 / WIDTH, (top - (side + label_h) / 2) / height, _wrap(title, title_chars), fontsize=7.5,
                     weight="bold", rotation=90, ha="left", va="center", ma="center", linespacing=1.1)
            top -= side + label_h
        top -= gap
    save(fig, path)


def leakage_pairs(cells: Sequence[tuple[Image.Image, Image.Image, str, str, str]],
                  words: dict[str, dict[str, str]], path: Path) -> None:
    """Training/validation duplicate pairs side by side, two pairs per row."""
    per_row = 2
    nrows = max(1, math.ceil(len(cells) / per_row))
    fig, axes = plt.subplots(nrows, 2 * per_row, figsize=(WIDTH, 2.15 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i, (train, val, species, train_name, val_name) in enumerate(cells):
        r, c = divmod(i, per_row)
        for j, (image, split, name) in enumerate(((train, "training", train_name), (val, "validation", val_name))):
            ax = axes[r, 2 * c + j]
            ax.set_axis_on()
            _photo_axis(ax, _center_square(image), SPLIT_COLORS[split])
            ax.set_title(f"{words['splits'][split]}\n{name}", fontsize=7.5)
            if j == 0:
                ax.set_xlabel(italic(species), fontsize=7.5, loc="right")
                ax.xaxis.set_label_coords(1.03, -0.05)
                ax.xaxis.label.set_ha("center")
    fig.subplots_adjust(left=0, right=1, wspace=0.06, hspace=0.4)
    save(fig, path)
