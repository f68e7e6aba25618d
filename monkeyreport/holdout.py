"""The held-out training images of `selection = "holdout"` (no torch).

A run that selects its epoch on held-out images sets aside part of its training images:
per class `holdout_fraction` of them, drawn with the run's seed (the same on every rerun).
Copies must not straddle the two sides, or the held-out accuracy would reward memorising
them: every duplicate group (identical bytes or near-identical perceptual hashes, found by
the EDA's own `eda.find_duplicates`) lies wholly on one side.
"""

from __future__ import annotations

import random
from collections import Counter

from monkeyreport.data import ImageRecord
from monkeyreport.eda import find_duplicates


def holdout_split(records: list[ImageRecord], fraction: float, seed: int, near_distance: int) -> list[str]:
    """The relpaths, sorted, of the images of `records` (a run's usable training images) to hold out.

    Per class the target is `round(fraction * n)` images, at least one and never all of them
    (none for a class of one image). Units (a duplicate group, or an image without copies) are
    taken in a seeded random order; a unit is held out when it fits within the target of every
    class it touches, so a class reaches its target exactly unless large groups get in the way.
    """
    by_path = {r.relpath: r for r in records}
    units = [[by_path[f["file"]] for f in group["files"]]
             for group in find_duplicates(records, near_distance)["groups"]]
    grouped = {r.relpath for unit in units for r in unit}
    units += [[r] for r in records if r.relpath not in grouped]
    units.sort(key=lambda unit: min(r.relpath for r in unit))
    random.Random(f"holdout-{seed}").shuffle(units)

    counts = Counter(r.code for r in records)
    target = {code: min(n - 1, max(1, round(fraction * n))) for code, n in counts.items()}
    held: Counter[str] = Counter()
    out = []
    for unit in units:
        need = Counter(r.code for r in unit)
        if all(held[code] + k <= target[code] for code, k in need.items()):
            held.update(need)
            out += [r.relpath for r in unit]
    return sorted(out)
