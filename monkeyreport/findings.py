"""The report's conclusions as findings: facts with the rule that supports them, never worded.

Each finding is a `kind` plus the rows and numbers it rests on; a template macro turns it
into sentences. A claim is made only where its rule holds: "better" only with a comparison
significant after Holm's correction, a parameters trend only over enough architectures, a
confusion "shared" only by distinct architectures with enough photographs each, a rise of the
validation loss reported with how much accuracy it cost. Reads the rows of
context.experiment_rows and the tests of stats.json; no torch.
"""

from __future__ import annotations

import math
from typing import Any

import scipy.stats

from monkeyreport import selection
from monkeyreport.results import Statistics
from monkeyreport.stats import holm

FAILED_TO_LEARN_FACTOR = 1.5  # accuracy below 1.5 / number of classes: the model did not learn
OVERFITTING_RISE = 1.1  # validation loss 10 % above its minimum by the last epoch
# A confused pair is a difficulty of the data, not of one model, when experiments of this many
# distinct architectures each misclassify at least this many distinct photographs between the two
# species (two variants of one architecture share its weights and errors; one or two photographs
# are anecdotes).
SHARED_MIN_ARCHITECTURES = 2
SHARED_MIN_IMAGES = 3


def row_scores(row: dict[str, Any]) -> selection.Entry:
    """A finished row of context.experiment_rows as `selection` reads it."""
    return selection.Entry(row["architecture"], row["frozen"], row["accuracy"], row["macro_f1"])


# ----------------------------------------------------------------------------- significance


def comparison_rows(rows: list[dict[str, Any]], statistics: Statistics) -> list[dict[str, Any]]:
    """The comparisons of stats.json with the experiments' rows in place of their names; with
    one seed, its McNemar counts beside the test."""
    by_name = {r["name"]: r for r in rows}
    out = []
    for t in statistics.comparisons:
        if t["a"] in by_name and t["b"] in by_name:
            single = t["mcnemar"][0] if len(t["mcnemar"]) == 1 else {}
            out.append(t | {"row_a": by_name[t["a"]], "row_b": by_name[t["b"]],
                            "only_a_right": single.get("only_a_right"), "only_b_right": single.get("only_b_right")})
    return out


def find_test(tests: list[dict[str, Any]], a: str, b: str) -> dict[str, Any] | None:
    for t in tests:
        if {t["a"], t["b"]} == {a, b}:
            return t
    return None


# ----------------------------------------------------------------------------- confusions and curves


def shared_confusions(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Species pairs among the most confused (stats.json, each photograph once) of several
    finished experiments. `shared`: those that meet the rule (SHARED_MIN_ARCHITECTURES distinct
    architectures, each with an experiment that misclassifies SHARED_MIN_IMAGES photographs or
    more between the pair); `repeated`: the others listed by two or more experiments, with why
    they fall short (`reason` "one_architecture" or "few_images"). Each entry: `pair` (codes),
    `rows` (the experiments listing it), `errors` (theirs), `supporting` (those with enough)."""
    seen: dict[tuple[str, str], list[tuple[dict[str, Any], int]]] = {}
    for r in rows:
        if r.get("stats"):
            for p in r["stats"]["most_confused"]:
                seen.setdefault(tuple(p["pair"]), []).append((r, p["errors"]))
    shared, repeated = [], []
    for pair, members in seen.items():
        if len(members) < 2:
            continue
        supporting = [r for r, errors in members if errors >= SHARED_MIN_IMAGES]
        entry = {"pair": list(pair), "rows": [r for r, _ in members], "errors": [e for _, e in members],
                 "supporting": supporting}
        if len({r["architecture"] for r in supporting}) >= SHARED_MIN_ARCHITECTURES:
            shared.append(entry)
        else:
            one = len({r["architecture"] for r, _ in members}) < SHARED_MIN_ARCHITECTURES
            repeated.append(entry | {"reason": "one_architecture" if one else "few_images"})
    for entries in (shared, repeated):
        entries.sort(key=lambda s: (-len(s["rows"]), -sum(s["errors"])))
    return {"shared": shared, "repeated": repeated,
            "rule": {"min_architectures": SHARED_MIN_ARCHITECTURES, "min_images": SHARED_MIN_IMAGES}}


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def curve_facts(row: dict[str, Any]) -> dict[str, Any] | None:
    """What the epoch history (its first seed) says: the epoch of lowest validation loss
    (`best`, the first on a tie) and the last, each with validation loss and accuracy,
    training accuracy and the train–validation accuracy gap (None where history.csv has no
    training accuracy); how much the loss rose after its minimum, and the validation images
    that accuracy lost meanwhile. Under holdout selection the "validation" of the history is
    the held-out training images (`n` counts those). None without a history."""
    history = row["history"]
    if not history:
        return None
    chosen = row["run"].selection
    holdout = chosen.get("mode") == "holdout"
    n = int(chosen.get("n_holdout") or 0) if holdout else row["run"].n_val

    def at(h: dict[str, float]) -> dict[str, Any]:
        train = _finite(h.get("train_accuracy"))
        return {"epoch": int(h["epoch"]), "val_loss": h["val_loss"], "val_accuracy": h["val_accuracy"],
                "train_accuracy": train, "gap": None if train is None else train - h["val_accuracy"]}

    best, last = at(min(history, key=lambda h: h["val_loss"])), at(history[-1])
    return {"best": best, "last": last, "holdout": holdout, "n": n, "seed": row.get("seed"),
            "loss_rise": last["val_loss"] / best["val_loss"] - 1 if best["val_loss"] > 0 else 0.0,
            "images_lost": round((best["val_accuracy"] - last["val_accuracy"]) * n)}


def diagnosis(row: dict[str, Any], species: dict[str, dict[str, str]]) -> dict[str, Any]:
    """One finished experiment as the interpretation reads it: its weakest species (lowest F1,
    then lowest recall; the first on a tie) with what its photographs are most often taken
    for (`species`: code -> the template's species entry), and its curves (`curve_facts`)."""
    def named(code: str) -> dict[str, str]:
        return species.get(code, {"latin": code})

    per_class = row["stats"]["per_class"] if row.get("stats") else []
    weakest = min(per_class, key=lambda c: (c["f1"], c["recall"]), default=None)
    if weakest is not None:
        taken = weakest.get("mistaken_for")
        weakest = weakest | {"species": named(weakest["class"]),
                             "taken_for": taken and taken | {"species": named(taken["class"])}}
    return {"row": row, "weakest": weakest, "curves": curve_facts(row)}


# ----------------------------------------------------------------------------- findings


def findings(rows: list[dict[str, Any]], tests: list[dict[str, Any]], num_classes: int,
             n_leaked: int, shared_confusions: list[dict[str, Any]] = (),
             trend: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The conclusions as facts: each a `kind` and the rows and numbers it rests on.

    A claim is made only where the numbers carry it: "better" only with a significant
    McNemar test, a parameters trend only over enough architectures.
    """
    done = [r for r in rows if r["status"] == "ok"]
    if not done:
        return [{"kind": "no_results"}]
    out: list[dict[str, Any]] = []
    best = [r for r in done if r["best"]]
    if len(done) == 1:
        out.append({"kind": "single", "row": done[0]})
    else:
        others = [r for r in done if not r["best"]]
        versus = [(r, find_test(tests, best[0]["name"], r["name"])) for r in others]
        out.append({"kind": "winner", "best": best,
                    "worse": [r for r, t in versus if t and t["significant"]],
                    "worse_tests": [t for r, t in versus if t and t["significant"]],
                    "tied": [{"row": r, "test": t} for r, t in versus if t and not t["significant"]]})
    out += _freezing(done, tests)
    out += _recipe_gaps(done, tests)
    out += _baseline(done, tests)
    rising = [o for o in (_overfitting(r, done) for r in done) if o]
    if rising:
        out.append({"kind": "overfitting", "runs": rising})
    if shared_confusions:
        out.append({"kind": "confusions", "pairs": shared_confusions[:3],
                    "min_architectures": SHARED_MIN_ARCHITECTURES, "min_images": SHARED_MIN_IMAGES})
    out += _parameter_trend(done, trend)
    chance = 1 / num_classes if num_classes else 0.0
    near_chance = [r for r in done if r["accuracy"] < FAILED_TO_LEARN_FACTOR * chance]
    if near_chance:
        out.append({"kind": "failed_to_learn", "rows": near_chance, "chance": chance})
    out += [{"kind": r["status"], "row": r} for r in rows if r["status"] in ("failed", "pending", "unreadable")]
    changes = [{"row": r, "delta": r["group"]["leak_free"]["accuracy"]["mean"] - r["accuracy"]}
               for r in done if r["group"] and r["stats"] and r["stats"]["leak_free"]["accuracy"]["n"]]
    if n_leaked and changes:
        deltas = [c["delta"] for c in changes]
        remembered = memorisation(done)
        out.append({"kind": "leakage", "n_leaked": n_leaked, "changes": changes,
                    "n_clean": changes[0]["row"]["stats"]["leak_free"]["accuracy"]["n"],
                    "min": min(deltas), "max": max(deltas), "memorisation": remembered,
                    "widest": max(remembered, key=lambda m: m["difference"], default=None)})
    return out


def memorisation(done: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per finished experiment with both kinds of image: its accuracy (mean over seeds) on the
    validation photographs with a copy in training and on the others, the difference, and
    whether the first seed's photographs with a copy are right more often than chance allows
    (one-sided Fisher exact test on its 2×2 table of right and wrong, Holm-corrected over
    the models): a few dozen copies make a gap of several points easy to get by chance."""
    out = []
    for r in done:
        counts = [r["stats"][subset]["accuracy"]["n"] for subset in ("leaked", "leak_free")] if r["stats"] else [0]
        if r["group"] and all(counts):
            leaked, clean = r["group"]["leaked"]["accuracy"]["mean"], r["group"]["leak_free"]["accuracy"]["mean"]
            out.append({"row": r, "leaked": leaked, "clean": clean, "difference": leaked - clean,
                        "n_leaked": counts[0], "n_clean": counts[1], "p": _fisher_greater(r["stats"])})
    # One test per model, and the text names the widest gap: Holm keeps that choice honest.
    for entry, adjusted in zip(out, holm([e["p"] for e in out])):
        entry["p_holm"] = adjusted
    return out


def _fisher_greater(first_seed: dict[str, Any]) -> float:
    """One-sided p-value that the photographs with a copy in training are right more often."""
    table = []
    for subset in ("leaked", "leak_free"):
        n = first_seed[subset]["accuracy"]["n"]
        right = round(first_seed[subset]["accuracy"]["value"] * n)
        table.append([right, n - right])
    return float(scipy.stats.fisher_exact(table, alternative="greater").pvalue)


def _freezing(done: list[dict[str, Any]], tests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for frozen, tuned in selection.variant_pairs(done, row_scores):
        test = find_test(tests, frozen["name"], tuned["name"])
        winner = None
        if test and test["significant"]:
            winner = "frozen" if frozen["accuracy"] > tuned["accuracy"] else "finetuned"
        out.append({"kind": "freezing", "title": frozen["label"], "frozen": frozen,
                    "finetuned": tuned, "test": test, "winner": winner,
                    "n_seeds": len(test["seeds"]) if test else 1,
                    "recipe_of": tuned if tuned["recipe"] else (frozen if frozen["recipe"] else None)})
    return out


def _recipe_gaps(done: list[dict[str, Any]], tests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Whether a fine-tuning recipe closes the gap to the frozen backbone of its architecture:
    for each fine-tuned experiment with a recipe of its own, against the fine-tuned one with
    the base recipe, the frozen one's lead in accuracy points with each, and in how many
    seeds the frozen backbone still leads."""
    out = []
    pairs = selection.variant_pairs(done, row_scores)
    for frozen, tuned in pairs:
        base = next((r for f, r in pairs if f is frozen and not r["recipe"]), None)
        if not tuned["recipe"] or base is None:
            continue
        by_seed = [dict(zip(r["group"]["seeds"], r["group"]["accuracy"]["values"])) for r in (frozen, tuned)]
        ahead = [by_seed[0][s] > by_seed[1][s] for s in by_seed[0] if s in by_seed[1]]
        out.append({"kind": "recipe_gap", "frozen": frozen, "base": base, "tuned": tuned,
                    "gap_base": frozen["accuracy"] - base["accuracy"], "gap_tuned": frozen["accuracy"] - tuned["accuracy"],
                    "frozen_ahead": sum(ahead), "n_seeds": len(ahead),
                    "test_base": find_test(tests, frozen["name"], base["name"]),
                    "test_tuned": find_test(tests, frozen["name"], tuned["name"]),
                    "test_recipes": find_test(tests, base["name"], tuned["name"])})
    return out


def _overfitting(row: dict[str, Any], done: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A run whose validation loss rose by a tenth or more from its minimum to the last
    epoch, with how large each effect is: the rise, the validation images its accuracy lost
    meanwhile (`curve_facts`) and, where the other variant of its architecture did better on
    the same seed, how many of the images between them stopping at the minimum would have
    recovered (`share`: "none", "part" under half, "most", "all"). Not for a run that kept its
    best held-out epoch: its result is not the last epoch's."""
    curves = curve_facts(row)
    if (curves is None or len(row["history"]) < 3 or curves["holdout"]
            or curves["best"]["epoch"] == curves["last"]["epoch"]
            or curves["loss_rise"] < OVERFITTING_RISE - 1):
        return None
    out = {"row": row, "curves": curves, "partner": None}
    for frozen, tuned in selection.variant_pairs(done, row_scores):
        other = tuned if frozen is row else (frozen if tuned is row else None)
        if other is None or other.get("seed") != row.get("seed") or other["run"].accuracy <= row["run"].accuracy:
            continue
        behind = round((other["run"].accuracy - row["run"].accuracy) * row["run"].n_val)
        lost = curves["images_lost"]
        share = "none" if lost <= 0 else ("all" if lost >= behind else ("most" if 2 * lost >= behind else "part"))
        out["partner"] = {"row": other, "behind": behind, "share": share}
        break
    return out


def _baseline(done: list[dict[str, Any]], tests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    vanilla = selection.baselines(done, row_scores)
    transfer = selection.transfers(done, row_scores)
    if not (vanilla and transfer):
        return []
    v = vanilla[0]
    gaps = [r["accuracy"] - v["accuracy"] for r in transfer]
    best_transfer = selection.best(transfer, row_scores)
    return [{"kind": "baseline", "vanilla": v, "n_transfer": len(transfer),
             "n_above": sum(g > 0 for g in gaps), "gap_min": min(gaps), "gap_max": max(gaps),
             "best_transfer": best_transfer,
             "test": find_test(tests, best_transfer["name"], v["name"])}]


def _parameter_trend(done: list[dict[str, Any]], trend: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The parameters-vs-accuracy finding from stats.json's trend, with the rows it names."""
    by_name = {r["name"]: r for r in done}
    if not trend or trend["rho"] is None or not all(n in by_name for n in trend["experiments"]):
        return []
    points = [by_name[n] for n in trend["experiments"]]
    rho = trend["rho"]
    direction = "up" if rho >= 0.7 else ("down" if rho <= -0.7 else "none")
    return [{"kind": "parameters", "rho": rho, "direction": direction, "n": len(points),
             "largest": points[-1], "smallest": points[0]}]
