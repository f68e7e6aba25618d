"""How sure the report's numbers are: statistics from result files, without torch.

From each experiment's predictions.csv and the EDA's duplicate groups this stage computes
report/stats/stats.json:

- 95 % bootstrap intervals (percentile method, seeded) of accuracy and macro F1, resampling
  the validation photographs (the copies of one photograph inside the validation split, the
  EDA's duplicate groups, are drawn together);
- the same metrics on the validation images without an exact or near copy in training, each
  photograph once ("validación sin duplicados"), and on those with such a copy (what the
  models remember of training);
- per experiment, the mean and standard deviation of its metrics over its seeds;
- comparisons between the best experiment and each other one, and between the frozen and
  fine-tuned variants of each architecture: an exact McNemar test (binomial test on the
  discordant photographs, each counted once) per seed, and a paired t-test over seeds when there are two or more;
  the deciding p-values of the whole family are corrected by Holm's method;
- precision, recall and F1 per class (every image, as the confusion matrix), and, each
  photograph once, what each class is most often taken for and the most confused class pairs;
- Spearman's correlation between parameters and accuracy across architectures;
- the calibration of each run's probabilities (calibration.py: ECE and reliability bins), and
  per experiment its ECE and training time over seeds.

Macro F1 follows torchmetrics' definition (the one training uses): the mean F1 over the
classes that occur among the true or the predicted labels, so a recomputation from
predictions.csv equals metrics.json.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Iterable

import numpy as np

from monkeyreport import calibration, selection
from monkeyreport.config import Config
from monkeyreport.errors import MonkeyReportError
from monkeyreport.pipeline import Options, StageOutcome, timed
from monkeyreport.results import EdaSummary, Predictions, ReportFiles, RunFiles, RunMetrics, Statistics

N_RESAMPLES = 2000
CONFIDENCE = 0.95
ALPHA = 0.05  # significance level of the comparisons, after Holm's correction
TOP_CONFUSED = 3
TREND_MIN_ARCHITECTURES = 3  # a parameters-vs-accuracy trend needs at least three points


# ----------------------------------------------------------------------------- metrics


def confusion_matrices(true: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """Confusion matrices of label arrays shaped (..., n): result (..., k, k), rows = true."""
    lead = true.shape[:-1]
    batch = int(np.prod(lead)) if lead else 1
    t = true.reshape(batch, -1)
    p = predicted.reshape(batch, -1)
    codes = (np.arange(batch)[:, None] * k * k + t * k + p).ravel()
    return np.bincount(codes, minlength=batch * k * k).reshape(*lead, k, k)


def per_class(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from confusion matrices (..., k, k)."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(float)
    predicted = cm.sum(axis=-2)
    support = cm.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        recall = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
        denominator = predicted + support  # 2tp + fp + fn
        f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support,
            "present": denominator > 0}


def macro_f1(cm: np.ndarray) -> np.ndarray:
    """Mean F1 over the classes present among true or predicted labels (torchmetrics' rule)."""
    scores = per_class(cm)
    present = scores["present"]
    return (scores["f1"] * present).sum(axis=-1) / np.maximum(present.sum(axis=-1), 1)


def accuracy(cm: np.ndarray) -> np.ndarray:
    return np.trace(cm, axis1=-2, axis2=-1) / np.maximum(cm.sum(axis=(-2, -1)), 1)


@dataclass(frozen=True)
class Estimate:
    """A metric on a set of validation images with its bootstrap interval."""

    value: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}


def photographs(files: list[str], copies: Iterable[list[str]]) -> np.ndarray:
    """A photograph id per file, 0, 1, ... in order of first appearance: the files of one
    group of `copies` (validation files that are copies of each other) share theirs."""
    group_of = {f: i for i, group in enumerate(copies) for f in group}
    ids: dict[tuple[str, Any], int] = {}
    return np.array([ids.setdefault(("group", group_of[f]) if f in group_of else ("file", f), len(ids))
                     for f in files], dtype=np.int64)


def first_copies(ids: np.ndarray) -> np.ndarray:
    """Boolean mask of the first file of each photograph id: every photograph once."""
    mask = np.zeros(len(ids), dtype=bool)
    mask[np.unique(ids, return_index=True)[1]] = True
    return mask


def estimates(true: np.ndarray, predicted: np.ndarray, k: int, seed: int,
              ids: np.ndarray | None = None) -> dict[str, Estimate]:
    """Accuracy and macro F1 over the images with 95 % percentile-bootstrap intervals. The
    bootstrap resamples photographs (`ids`, from `photographs`; by default each image is
    its own): the copies of one photograph are drawn together, so they do not narrow the
    interval as independent images would."""
    from scipy.stats import bootstrap  # imported when statistics are computed, not when reused

    n = len(true)
    if n == 0:
        nan = float("nan")
        return {"accuracy": Estimate(nan, nan, nan, 0), "macro_f1": Estimate(nan, nan, nan, 0)}
    ids = np.arange(n) if ids is None else ids
    m = int(ids.max()) + 1
    codes = true * k + predicted

    def resampled(sample: np.ndarray) -> np.ndarray:
        """Confusion matrices (..., k, k) of resampled photograph indices (..., m): each image
        weighted by how often its photograph was drawn."""
        lead = sample.shape[:-1]
        flat = sample.reshape(-1, m)
        b = len(flat)
        draws = np.bincount((np.arange(b)[:, None] * m + flat).ravel(), minlength=b * m).reshape(b, m)
        cm = np.bincount((np.arange(b)[:, None] * k * k + codes).ravel(), weights=draws[:, ids].ravel(),
                         minlength=b * k * k)
        return cm.reshape(*lead, k, k)

    out = {}
    for name, metric in (("accuracy", accuracy), ("macro_f1", macro_f1)):
        def statistic(sample: np.ndarray, axis: int = -1, metric=metric) -> np.ndarray:
            return metric(resampled(np.moveaxis(sample, axis, -1)))

        value = float(statistic(np.arange(m)))
        if m == 1:
            out[name] = Estimate(value, value, value, n)
            continue
        result = bootstrap((np.arange(m),), statistic, vectorized=True,
                           n_resamples=N_RESAMPLES, confidence_level=CONFIDENCE,
                           method="percentile", rng=np.random.default_rng(seed))
        ci = result.confidence_interval
        out[name] = Estimate(value, float(ci.low), float(ci.high), n)
    return out


# ----------------------------------------------------------------------------- tests


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test of two classifiers on the same images."""

    a: str
    b: str
    only_a_right: int
    only_b_right: int
    p_value: float

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA

    def as_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "only_a_right": self.only_a_right,
                "only_b_right": self.only_b_right, "p_value": self.p_value,
                "significant": self.significant}


def mcnemar(a: str, b: str, right_a: np.ndarray, right_b: np.ndarray) -> McNemar:
    """Two-sided exact test: under H0 the discordant images split 50/50 (binomial)."""
    only_a = int(np.sum(right_a & ~right_b))
    only_b = int(np.sum(right_b & ~right_a))
    discordant = only_a + only_b
    from scipy.stats import binomtest

    p = 1.0 if discordant == 0 else float(binomtest(only_a, discordant, 0.5).pvalue)
    return McNemar(a, b, only_a, only_b, min(p, 1.0))


def most_confused(cm: np.ndarray, classes: list[str], top: int = TOP_CONFUSED) -> list[dict[str, Any]]:
    """Class pairs with the most errors in either direction, most first (ties by code)."""
    pairs = []
    for i, j in combinations(range(len(classes)), 2):
        errors = int(cm[i, j] + cm[j, i])
        if errors:
            pairs.append({"pair": [classes[i], classes[j]], "errors": errors,
                          "a_as_b": int(cm[i, j]), "b_as_a": int(cm[j, i])})
    pairs.sort(key=lambda p: (-p["errors"], p["pair"]))
    return pairs[:top]


# ----------------------------------------------------------------------------- the stage


def mistaken_for(cm: np.ndarray, i: int, classes: list[str]) -> dict[str, Any] | None:
    """The class that images of class `i` are most often predicted as (the first on a tie),
    with how many; None when none is wrong."""
    wrong = cm[i].copy()
    wrong[i] = 0
    j = int(np.argmax(wrong))
    return {"class": classes[j], "images": int(wrong[j])} if wrong[j] else None


def experiment_statistics(predictions: Predictions, leaked: set[str], seed: int,
                          copies: Iterable[list[str]] = ()) -> dict[str, Any]:
    """One run's statistics. `leaked`: validation files with a copy in training; `copies`:
    groups of validation files that are copies of each other, counted once except in the
    whole-validation values (which equal metrics.json) and the per-class table."""
    k = len(predictions.classes)
    ids = photographs(predictions.files, copies)
    once = first_copies(ids)
    in_training = np.array([f in leaked for f in predictions.files], dtype=bool)

    def on(mask: np.ndarray) -> dict[str, Any]:
        subset = predictions.subset(mask)
        return {m: e.as_dict() for m, e in estimates(subset.true, subset.predicted, k, seed).items()}

    cm = confusion_matrices(predictions.true, predictions.predicted, k)
    cm_once = confusion_matrices(predictions.true[once], predictions.predicted[once], k)
    scores = per_class(cm)
    return {
        "n_val": len(predictions.files),
        "n_leaked": int(in_training.sum()),  # images with a copy in training
        "n_photographs": int(once.sum()),  # distinct photographs: copies inside validation once
        "all": {m: e.as_dict() for m, e in
                estimates(predictions.true, predictions.predicted, k, seed, ids).items()},
        "leak_free": on(once & ~in_training),
        "leaked": on(once & in_training),
        "per_class": [{"class": c, "precision": float(scores["precision"][i]), "recall": float(scores["recall"][i]),
                       "f1": float(scores["f1"][i]), "support": int(scores["support"][i]),
                       "mistaken_for": mistaken_for(cm_once, i, predictions.classes)}
                      for i, c in enumerate(predictions.classes)],
        "most_confused": most_confused(cm_once, predictions.classes),
    }


def over_seeds(values: list[float]) -> dict[str, Any]:
    """Mean, standard deviation (n - 1; 0 for one value) and the values of one metric."""
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "sd": sd, "n": len(values), "values": values}


def group_statistics(names: list[str], seeds: list[int], per_run: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """An experiment's metrics over the seeds of its finished runs (`names`, `seeds`)."""
    def values(subset: str, metric: str) -> list[float]:
        return [per_run[n][subset][metric]["value"] for n in names]

    return {"runs": names, "seeds": seeds,
            "accuracy": over_seeds(values("all", "accuracy")), "macro_f1": over_seeds(values("all", "macro_f1")),
            "leak_free": {m: over_seeds(values("leak_free", m)) for m in ("accuracy", "macro_f1")},
            "leaked": {m: over_seeds(values("leaked", m)) for m in ("accuracy", "macro_f1")}}


def costs_over_seeds(names: list[str], runs: dict[str, RunMetrics], per_run: dict[str, dict[str, Any]]
                     ) -> dict[str, Any]:
    """An experiment's ECE, training seconds and epochs over the seeds of its runs `names`."""
    return {"ece": over_seeds([per_run[n]["calibration"]["ece"] for n in names]),
            "train_seconds": over_seeds([runs[n].train_seconds for n in names]),
            "epochs": over_seeds([float(runs[n].epochs) for n in names])}


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (scipy has no function for it):
    the i-th smallest is multiplied by (m - i) and the sequence made non-decreasing."""
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(sorted(range(len(p_values)), key=lambda j: p_values[j])):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def paired_over_seeds(a: list[float], b: list[float]) -> float:
    """Two-sided paired t-test of two experiments' accuracies over their common seeds; a
    difference without spread (every seed the same) gives no evidence either way (p = 1)."""
    from scipy.stats import ttest_rel

    if np.ptp(np.subtract(a, b)) == 0:
        return 1.0  # no spread: the t statistic is undefined (or infinite), not evidence
    return float(ttest_rel(a, b).pvalue)


def comparisons(config: Config, groups: dict[str, dict[str, Any]], runs: dict[str, RunMetrics],
                predictions: dict[str, Predictions], best: str,
                copies: Iterable[list[str]] = ()) -> list[dict[str, Any]]:
    """Best vs every other experiment, then frozen vs fine-tuned per architecture, then two
    recipes of one architecture and variant, each over
    the seeds both ran: McNemar per seed (each photograph once, `copies` as in
    `experiment_statistics`), and the test that decides (the paired t-test over
    seeds with two seeds or more, else McNemar), corrected for the whole family by Holm."""
    view = mean_views(groups, runs)
    pairs = [(best, name, "best") for name in groups if name != best]
    for kind, found in (("variants", selection.variant_pairs), ("recipes", selection.recipe_pairs)):
        for a, b in found(list(groups), view.__getitem__):
            if not any({a, b} == {x, y} for x, y, _ in pairs):
                pairs.append((a, b, kind))
    run_of = {(r.experiment.name, r.seed): r.name for r in config.runs}
    out = []
    for a, b, kind in pairs:
        seeds = [s for s in config.run_seeds if run_of[(a, s)] in predictions and run_of[(b, s)] in predictions
                 and predictions[run_of[(a, s)]].files == predictions[run_of[(b, s)]].files]
        if not seeds:
            continue  # different validation images (e.g. another subset): not comparable
        tests = []
        for s in seeds:
            pa, pb = predictions[run_of[(a, s)]], predictions[run_of[(b, s)]]
            once = first_copies(photographs(pa.files, copies))
            right_a, right_b = (pa.predicted == pa.true)[once], (pb.predicted == pb.true)[once]
            tests.append(mcnemar(a, b, right_a, right_b).as_dict() | {"seed": s})
        acc_a = [runs[run_of[(a, s)]].accuracy for s in seeds]
        acc_b = [runs[run_of[(b, s)]].accuracy for s in seeds]
        paired = len(seeds) > 1
        out.append({"a": a, "b": b, "kind": kind, "seeds": seeds, "mcnemar": tests,
                    "mean_difference": float(np.mean(np.subtract(acc_a, acc_b))),
                    "test": "paired_t" if paired else "mcnemar",
                    "p_value": paired_over_seeds(acc_a, acc_b) if paired else tests[0]["p_value"]})
    for comparison, adjusted in zip(out, holm([c["p_value"] for c in out])):
        comparison |= {"p_holm": adjusted, "significant": adjusted < ALPHA}
    return out


def mean_views(groups: dict[str, dict[str, Any]], runs: dict[str, RunMetrics]) -> dict[str, selection.Entry]:
    """Each experiment as `selection` ranks it: its mean metrics over seeds."""
    def view(group: dict[str, Any]) -> selection.Entry:
        first = runs[group["runs"][0]]
        return selection.Entry(first.architecture, first.frozen, group["accuracy"]["mean"], group["macro_f1"]["mean"])

    return {name: view(group) for name, group in groups.items()}


def parameter_trend(groups: dict[str, dict[str, Any]], runs: dict[str, RunMetrics]) -> dict[str, Any] | None:
    """Spearman's rank correlation between parameters and mean accuracy, one point per
    architecture (its best experiment), ordered by parameters; None below three architectures."""
    from scipy.stats import spearmanr

    view = mean_views(groups, runs)
    params = {name: runs[g["runs"][0]].params_total for name, g in groups.items()}
    best = selection.best_per_architecture(list(groups), view.__getitem__)
    if len(best) < TREND_MIN_ARCHITECTURES:
        return None
    names = sorted(best.values(), key=params.__getitem__)
    rho = spearmanr([params[n] for n in names], [view[n].accuracy for n in names]).statistic
    return {"experiments": names, "rho": None if np.isnan(rho) else float(rho)}


def compute(config: Config) -> Statistics:
    """Statistics of every finished run whose predictions.csv is readable, and of each
    experiment over its seeds."""
    report = ReportFiles(config.report_dir)
    eda = EdaSummary.read_if_exists(report.eda)
    if eda is None:
        raise MonkeyReportError(f"{report.eda}: not found; run `monkeyreport eda` first")
    leaked = eda.leaked_validation_files
    copies = eda.validation_copies
    runs: dict[str, RunMetrics] = {}
    predictions: dict[str, Predictions] = {}
    problems: list[str] = []
    for run in config.runs:
        files = RunFiles.of(config.runs_dir, run.name)
        if not (files.metrics.is_file() and files.predictions.is_file()):
            continue
        try:
            runs[run.name] = RunMetrics.read(files.metrics)
            predictions[run.name] = Predictions.read(files.predictions)
        except MonkeyReportError as exc:  # a damaged file: that run has no statistics
            runs.pop(run.name, None)
            problems.append(str(exc))
    per_run = {name: experiment_statistics(p, leaked, config.seed, copies)
               | {"calibration": calibration.reliability(p.probabilities, p.true)} for name, p in predictions.items()}
    groups = {}
    for exp in config.experiments:
        finished = [r for r in config.runs if r.experiment is exp and r.name in per_run]
        if finished:
            groups[exp.name] = group_statistics([r.name for r in finished], [r.seed for r in finished], per_run)
            groups[exp.name] |= costs_over_seeds([r.name for r in finished], runs, per_run)
    view = mean_views(groups, runs)
    best = selection.best(list(groups), view.__getitem__)
    return Statistics(n_resamples=N_RESAMPLES, confidence=CONFIDENCE, alpha=ALPHA, seed=config.seed,
                      seeds=config.run_seeds, n_leaked=len(leaked), best=best, experiments=per_run, groups=groups,
                      comparisons=comparisons(config, groups, runs, predictions, best, copies) if best else [],
                      parameters=parameter_trend(groups, runs), problems=problems, calibration=calibration.rule())


def run_stage(config: Config, options: Options) -> StageOutcome:
    """The pipeline's stats stage: stats.json from the predictions of every finished run."""
    start = time.perf_counter()
    path = ReportFiles(config.report_dir).statistics
    statistics = compute(config)
    statistics.write(path)
    return StageOutcome(f"stats {timed(start)}: {len(statistics.groups)} experiment(s), "
                        f"{len(statistics.experiments)} run(s), {len(statistics.comparisons)} comparison(s) -> {path}")
