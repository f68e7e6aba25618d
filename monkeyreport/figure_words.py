"""The words drawn inside the figures (axis labels, legends, titles, diagram boxes): the
templates folder's figures.toml, read as species.toml is (species.py), so that a figure is
written in the language of the templates that place it and no word of it lives in the code.

Each value is a text, some with `{placeholders}` that the drawing fills with facts (counts,
names, numbers already formatted). `WORDS` lists every section and key a drawing uses; the
file must give exactly those, so a misspelt key is an error and not a silently missing label.
"""

from __future__ import annotations

import string
import tomllib
from pathlib import Path

from monkeyreport.errors import MonkeyReportError

FIGURE_WORDS_FILE = "figures.toml"  # in the templates folder

# section -> key -> the placeholders its text may use
WORDS: dict[str, dict[str, frozenset[str]]] = {
    "splits": {"training": frozenset(), "validation": frozenset()},
    "class_distribution": {"title": frozenset({"split", "n"}), "x": frozenset()},
    "image_sizes": {"title": frozenset(), "x": frozenset(), "y": frozenset(), "legend": frozenset({"split", "n"})},
    "cnn_schematic": {key: frozenset() for key in (
        "input", "convolution_first", "pooling_first", "convolution", "pooling", "flatten", "dense",
        "features", "classification")} | {"output": frozenset({"classes"})},
    "transfer_learning": {key: frozenset() for key in (
        "source", "source_images", "backbone", "source_head", "target_images", "transferred", "copied",
        "replaced", "note")} | {"target": frozenset({"classes"}), "target_head": frozenset({"classes"})},
    "architecture": {"input": frozenset(), "params": frozenset({"params"})},
    "experiments": {"frozen": frozenset({"label"}), "finetuned": frozenset({"label"}),
                    "frozen_variant": frozenset(), "finetuned_variant": frozenset(),
                    "frozen_shared": frozenset({"label"}), "finetuned_shared": frozenset({"label"})},
    "confusion": {"x": frozenset(), "y": frozenset()},
    "curves": {key: frozenset() for key in (
        "epoch", "loss", "accuracy", "train_loss", "val_loss", "train_accuracy", "val_accuracy",
        "holdout_loss", "holdout_accuracy")},
    "seeds": {"accuracy": frozenset(), "macro_f1": frozenset()},
    "reliability": {"x": frozenset(), "y": frozenset(), "ideal": frozenset(), "ece": frozenset({"ece"})},
    "top_losses": {"label": frozenset({"true", "predicted", "probability"}), "leaked": frozenset()},
    "grad_cam": {"prediction": frozenset({"species", "probability", "verdict"}), "correct": frozenset(),
                 "wrong": frozenset(), "concentration": frozenset({"value"}), "empty": frozenset(),
                 "agreement": frozenset({"value"})},
}

FigureWords = dict[str, dict[str, str]]


def figure_words(templates_dir: Path) -> FigureWords:
    """Section -> key -> text from the templates folder's figures.toml."""
    path = templates_dir / FIGURE_WORDS_FILE
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MonkeyReportError(f"{path}: not found; the words drawn in the figures live there") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise MonkeyReportError(f"{path}: not valid TOML ({exc})") from None
    for section, keys in WORDS.items():
        given = table.get(section)
        if not isinstance(given, dict):
            raise MonkeyReportError(f"{path}: section [{section}] is missing")
        for key, allowed in keys.items():
            text = given.get(key)
            if not isinstance(text, str):
                raise MonkeyReportError(f"{path}: [{section}] needs a text value '{key}'")
            used = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
            if used - allowed:
                raise MonkeyReportError(f"{path}: [{section}] {key} uses {{{sorted(used - allowed)[0]}}}; "
                                        f"it may use {', '.join('{' + a + '}' for a in sorted(allowed)) or 'none'}")
        if unknown := sorted(set(given) - set(keys)):
            raise MonkeyReportError(f"{path}: [{section}] has an unknown key '{unknown[0]}'")
    if unknown := sorted(set(table) - set(WORDS)):
        raise MonkeyReportError(f"{path}: unknown section [{unknown[0]}]")
    return table
