"""The report's conclusions as findings: facts with the rule that supports them, never worded.

Each finding is a `kind` plus the rows and numbers it rests on; a template macro turns it
into sentences. A claim is made only where its rule holds: "better" only with a comparison
significant after Holm's correction, a parameters trend only over enough architectures. Reads the rows of
context.experiment_rows and the tests of stats.json; no torch.
"""

from __future__ import annotations

from typing import Any

from monkeyreport import selection
from monkeyreport.results import Statistics

FAILED_TO_LEARN_FACTOR = 1.5  # accuracy below 1.5 / number of classes: the model did not learn
OVERFITTING_RISE = 1.1  # validation loss 10 % above its minimum by the last epoch


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
    rising = [o for o in map(_overfitting, done) if o]
    if rising:
        out.append({"kind": "overfitting", "runs": rising})
    if shared_confusions:
        out.append({"kind": "confusions", "pairs": shared_confusions[:3]})
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
        out.append({"kind": "leakage", "n_leaked": n_leaked, "changes": changes,
                    "n_clean": changes[0]["row"]["stats"]["leak_free"]["accuracy"]["n"],
                    "min": min(deltas), "max": max(deltas)})
    return out


def _freezing(done: list[dict[str, Any]], tests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for frozen, tuned in selection.variant_pairs(done, row_scores):
        test = find_test(tests, frozen["name"], tuned["name"])
        winner = None
        if test and test["significant"]:
            winner = "frozen" if frozen["accuracy"] > tuned["accuracy"] else "finetuned"
        out.append({"kind": "freezing", "title": frozen["label"], "frozen": frozen,
                    "finetuned": tuned, "test": test, "winner": winner})
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


def _overfitting(row: dict[str, Any]) -> dict[str, Any] | None:
    """The epoch of lowest validation loss when the loss then rose by a tenth or more by the
    last epoch: the run went on past its best point (a likely cause of a weaker result). Not
    for a run that kept its best held-out epoch: its result is not the last epoch's."""
    history = row["history"]
    if len(history) < 3 or row["run"].selection.get("mode") == "holdout":
        return None
    best = min(history, key=lambda h: h["val_loss"])
    last = history[-1]
    if best is last or last["val_loss"] < OVERFITTING_RISE * best["val_loss"]:
        return None
    return {"row": row, "best_epoch": int(best["epoch"]), "last_epoch": int(last["epoch"]),
            "best_loss": best["val_loss"], "last_loss": last["val_loss"]}


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
