"""Which run is best, which runs pair up, which is the baseline: decided here, once.

Callers hold runs in different shapes (names of stats.json's RunMetrics, the context's row
dicts, interpret's FinishedRun). Each function takes the items plus `view`, which gives an
item's `Scored` facts (a RunMetrics is one; `Entry` builds one), and returns the items
themselves. Ties keep the callers' order: the first of equally ranked runs wins.
"""

from __future__ import annotations

from typing import Callable, Iterable, NamedTuple, Protocol, TypeVar

from monkeyreport.architectures import ARCHITECTURES

T = TypeVar("T")


class Scored(Protocol):
    """What selection reads of a finished run."""

    @property
    def architecture(self) -> str: ...

    @property
    def frozen(self) -> bool: ...

    @property
    def accuracy(self) -> float: ...

    @property
    def macro_f1(self) -> float: ...


class Entry(NamedTuple):
    """The `Scored` facts of an item that is not a RunMetrics (e.g. a context row)."""

    architecture: str
    frozen: bool
    accuracy: float
    macro_f1: float


View = Callable[[T], Scored]


def rank_key(run: Scored) -> tuple[float, float]:
    """How Tabla 1 ranks runs: accuracy, then macro F1."""
    return (run.accuracy, run.macro_f1)


def best(items: Iterable[T], view: View[T]) -> T | None:
    """The best ranked item (the first among ties); None without items."""
    return max(items, key=lambda item: rank_key(view(item)), default=None)


def top(items: Iterable[T], view: View[T]) -> list[T]:
    """Every item ranked as the best (several on a tie), in the given order."""
    ranked = [(item, rank_key(view(item))) for item in items]
    first = max((key for _, key in ranked), default=None)
    return [item for item, key in ranked if key == first]


def best_per_architecture(items: Iterable[T], view: View[T]) -> dict[str, T]:
    """Each architecture's best item, architectures in order of first appearance."""
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(view(item).architecture, []).append(item)
    return {arch: best(members, view) for arch, members in groups.items()}


def is_baseline(architecture: str) -> bool:
    """Whether the registry gives the architecture the baseline role (an unknown one is not)."""
    facts = ARCHITECTURES.get(architecture)
    return facts is not None and facts.role == "baseline"


def baselines(items: Iterable[T], view: View[T]) -> list[T]:
    """The items of baseline architectures, in the given order."""
    return [item for item in items if is_baseline(view(item).architecture)]


def transfers(items: Iterable[T], view: View[T]) -> list[T]:
    """The items of transfer-learning (non-baseline) architectures, in the given order."""
    return [item for item in items if not is_baseline(view(item).architecture)]


def variant_pairs(items: Iterable[T], view: View[T]) -> list[tuple[T, T]]:
    """(frozen, fine-tuned) of each transfer architecture, every frozen item with every
    fine-tuned one (several recipes of a variant each get their pair), architectures in order
    of first appearance, items in the given order."""
    by_arch: dict[str, dict[bool, list[T]]] = {}
    for item in transfers(items, view):
        facts = view(item)
        by_arch.setdefault(facts.architecture, {True: [], False: []})[facts.frozen].append(item)
    return [(frozen, tuned) for variants in by_arch.values() for frozen in variants[True] for tuned in variants[False]]


def recipe_pairs(items: Iterable[T], view: View[T]) -> list[tuple[T, T]]:
    """Every two items of the same transfer architecture and variant (frozen or fine-tuned):
    the same model trained with two recipes, in the given order."""
    groups: dict[tuple[str, bool], list[T]] = {}
    for item in transfers(items, view):
        facts = view(item)
        groups.setdefault((facts.architecture, facts.frozen), []).append(item)
    return [(a, b) for members in groups.values() for i, a in enumerate(members) for b in members[i + 1:]]
