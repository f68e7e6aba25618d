"""Exploratory analysis: counts, sizes, formats, odd files, duplicates -> eda.json + figures.

Whether it runs is the pipeline's decision (pipeline.py: the dataset, the [eda] settings
and this code are its inputs).
"""

from __future__ import annotations

import random
import statistics
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from monkeyreport import results
from monkeyreport.config import Config, resolve_data_root
from monkeyreport.pipeline import Options, StageOutcome, timed
from monkeyreport.species import species_names
from monkeyreport.data import (
    SPLITS,
    DatasetLayout,
    ImageRecord,
    Problem,
    fingerprint,
    list_files,
    load_rgb,
    locate,
    scan,
)

SAMPLE_DECODE_SIZE = 256
FIGURES = {
    "class_distribution": "figures/class_distribution.png",
    "sample_grid": "figures/sample_grid.jpg",  # photographs: JPEG, embedded in the PDF as is
    "image_sizes": "figures/image_sizes.png",
}


def run_eda(config: Config, show_progress: bool = True, templates_dir: Path | None = None) -> results.EdaSummary:
    """Analyse the dataset; write eda.json and the EDA figures; return what eda.json holds.
    `templates_dir`: the species table and figure words (default: as `render` finds its templates)."""
    layout = locate(resolve_data_root(config))
    entries = list_files(layout)
    records = scan(layout, entries, config.data.max_image_pixels, config.eda.workers, show_progress)
    eda = results.EdaSummary(
        **summarize(layout, records, config.eda.near_duplicate_distance),
        dataset_fingerprint=fingerprint(layout, entries),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        figures=FIGURES,
    )
    _draw_figures(layout, records, eda, config, templates_dir)
    eda.write(results.ReportFiles(config.report_dir).eda)
    return eda


def run_stage(config: Config, options: Options) -> StageOutcome:
    """The pipeline's eda stage."""
    start = time.perf_counter()
    s = run_eda(config, options.show_progress, options.templates)
    return StageOutcome(
        f"eda {timed(start)}: {s.splits['training']['total']} training, "
        f"{s.splits['validation']['total']} validation images, "
        f"{len(s.unreadable)} unusable, {len(s.odd_files)} odd, "
        f"{s.duplicates['n_groups']} duplicate groups "
        f"({s.duplicates['n_cross_split_groups']} across splits) -> {results.ReportFiles(config.report_dir).eda}")


def summarize(layout: DatasetLayout, records: list[ImageRecord], near_distance: int) -> dict[str, Any]:
    """Everything the report says about the data, as JSON-ready values."""
    usable = [r for r in records if r.ok]
    codes = layout.class_codes
    per_split = {
        split: {code: sum(1 for r in usable if r.split == split and r.code == code) for code in codes}
        for split in SPLITS
    }
    problems = list(layout.problems)
    for split, counts in per_split.items():
        problems += [Problem("class_empty_in_split", f"class '{c}' has no usable images in the {split} split",
                             c, split) for c, n in counts.items() if n == 0]
    formats = Counter(r.format for r in usable)
    main_format = formats.most_common(1)[0][0]
    return {
        "dataset_root": str(layout.root),
        "classes": [
            {"code": c.code, "latin_name": c.latin_name, "common_name": c.common_name,
             "display_name": c.display_name}
            for c in layout.classes
        ],
        "splits": {
            split: {
                "total": sum(counts.values()),
                "per_class": counts,
                "min_per_class": min(counts.values()),
                "max_per_class": max(counts.values()),
            }
            for split, counts in per_split.items()
        },
        "total_images": len(usable),
        "files_scanned": len(records),
        "image_sizes": _size_stats(usable),
        "formats": dict(formats.most_common()),
        "extensions": dict(Counter(r.extension.lower() or "(none)" for r in usable).most_common()),
        "modes": dict(Counter(r.mode for r in usable).most_common()),
        "main_format": main_format,
        "odd_files": _odd_files(usable, main_format),
        "unreadable": [_file_ref(r) | {"kind": r.error_kind, "reason": r.error} for r in records if not r.ok],
        "duplicates": find_duplicates(usable, near_distance),
        "dataset_problems": [p.as_dict() for p in problems],
    }


def _file_ref(r: ImageRecord) -> dict[str, str]:
    return {"file": r.relpath, "split": r.split, "class": r.code}


def _odd_files(usable: list[ImageRecord], main_format: str) -> list[dict[str, Any]]:
    odd = []
    for r in usable:
        issues, reasons = r.odd_issues, [r.odd_reason] if r.odd_reason else []
        if r.format not in (main_format, "MPO"):
            issues = [*issues, "minority_format"]
            reasons.append(f"format {r.format}, unlike the dataset's {main_format} files")
        if issues:
            odd.append(_file_ref(r) | {"format": r.format, "extension": r.extension,
                                       "issues": issues, "reason": "; ".join(reasons)})
    return odd


def _size_stats(usable: list[ImageRecord]) -> dict[str, Any]:
    def describe(values: list[int]) -> dict[str, float]:
        return {"min": min(values), "max": max(values), "mean": round(statistics.fmean(values), 1),
                "median": statistics.median(values)}

    widths = [r.width for r in usable]
    heights = [r.height for r in usable]
    common = Counter((r.width, r.height) for r in usable).most_common(5)
    return {
        "width": describe(widths),
        "height": describe(heights),
        "most_common": [{"width": w, "height": h, "count": n} for (w, h), n in common],
        "landscape": sum(1 for r in usable if r.width > r.height),
        "portrait": sum(1 for r in usable if r.width < r.height),
        "square": sum(1 for r in usable if r.width == r.height),
    }


def find_duplicates(usable: list[ImageRecord], near_distance: int) -> dict[str, Any]:
    """Groups of identical (same SHA-256 of the file's bytes) or near-identical images (64-bit
    perceptual hashes, imagehash.phash, at most `near_distance` bits apart), joined transitively."""
    n = len(usable)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        parent[find(i)] = find(j)

    by_sha: dict[str, int] = {}
    for i, r in enumerate(usable):
        if r.sha256 in by_sha:
            union(i, by_sha[r.sha256])
        by_sha.setdefault(r.sha256, i)
    hashes = np.array([int(r.phash, 16) for r in usable], dtype=np.uint64)
    for i in range(n - 1):
        distances = np.bitwise_count(hashes[i + 1:] ^ hashes[i])
        for j in np.nonzero(distances <= near_distance)[0]:
            union(i, i + 1 + int(j))

    members: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        members[find(i)].append(i)
    groups = []
    for idx in members.values():
        if len(idx) < 2:
            continue
        files = [usable[i] for i in idx]
        splits = sorted({f.split for f in files})
        groups.append({
            "kind": "exact" if len({f.sha256 for f in files}) == 1 else "near",
            "files": [_file_ref(f) for f in files],
            "splits": splits,
            "classes": sorted({f.code for f in files}),
            "cross_split": len(splits) > 1,
        })
    groups.sort(key=lambda g: (not g["cross_split"], g["files"][0]["file"]))
    cross = [g for g in groups if g["cross_split"]]
    in_validation = [n for g in groups if (n := sum(f["split"] == "validation" for f in g["files"])) > 1]
    return {
        "near_distance": near_distance,
        "hash_bits": 4 * len(usable[0].phash) if usable else 0,  # hex digits of the perceptual hash
        "groups": groups,
        "n_groups": len(groups),
        "n_exact_groups": sum(1 for g in groups if g["kind"] == "exact"),
        "n_files_in_groups": sum(len(g["files"]) for g in groups),
        "n_cross_split_groups": len(cross),
        "n_validation_files_in_cross_split_groups": sum(
            1 for g in cross for f in g["files"] if f["split"] == "validation"),
        "n_mixed_class_groups": sum(1 for g in groups if len(g["classes"]) > 1),
        # Copies of one photograph inside the validation split (EdaSummary.validation_copies):
        # the groups, and the files beyond the first of each, which the statistics leave out.
        "n_validation_copy_groups": len(in_validation),
        "n_validation_repeats": sum(n - 1 for n in in_validation),
    }


def _draw_figures(layout: DatasetLayout, records: list[ImageRecord], eda: results.EdaSummary,
                  config: Config, templates_dir: Path | None) -> None:
    from monkeyreport import figures  # matplotlib: only when there is something to draw
    from monkeyreport.figure_words import figure_words
    from monkeyreport.project import templates_for

    templates = templates_dir or templates_for(Path.cwd())
    words = figure_words(templates)
    names = species_names(eda, templates)
    report_dir = config.report_dir
    figures.class_distribution(
        {split: eda.splits[split]["per_class"] for split in SPLITS}, names, words,
        report_dir / FIGURES["class_distribution"],
    )
    figures.sample_grid(_pick_samples(layout, records, config, names), report_dir / FIGURES["sample_grid"])
    sizes = {split: [(r.width, r.height) for r in records if r.ok and r.split == split] for split in SPLITS}
    figures.image_sizes(sizes, words, report_dir / FIGURES["image_sizes"])


def _pick_samples(layout: DatasetLayout, records: list[ImageRecord], config: Config,
                  names: dict[str, str]) -> list[tuple[str, list]]:
    """A seeded choice of training images per class, decoded at reduced size."""
    rng = random.Random(config.seed)
    rows = []
    for cls in layout.classes:
        candidates = [r for r in records if r.ok and r.split == "training" and r.code == cls.code]
        chosen = rng.sample(candidates, min(config.eda.samples_per_class, len(candidates)))
        images = [load_rgb(layout.root / r.relpath, SAMPLE_DECODE_SIZE, config.data.max_image_pixels)
                  for r in chosen]
        rows.append((names.get(cls.code, cls.display_name), images))
    return rows
