"""How sure the report's numbers are: statistics from result files, without torch.

From each experiment's predictions.csv and the EDA's duplicate groups this stage computes
report/stats/stats.json:

- 95 % bootstrap intervals (percentile method, seeded) of accuracy and macro F1, resampling
  the validation images;
- the same metrics on the validation images without an exact or near copy in training
  ("validación sin duplicados");
- exact McNemar tests (binomial test on the discordant images) between the best experiment
  and each other one, and between the frozen and fine-tuned variant of each architecture;
- precision, recall and F1 per class, and the most confused class pairs, of every experiment;
- Spearman's correlation between parameters and accuracy across architectures.

Macro F1 follows torchmetrics' definition (the one training uses): the mean F1 over the
classes that occur among the true or the predicted labels, so a recomputation from
predictions.csv equals metrics.json.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from monkeyreport import selection
from monkeyreport.config import Config
from monkeyreport.errors import MonkeyReportError
from monkeyreport.pipeline import Options, StageOutcome, timed
from monkeyreport.results import EdaSummary, Predictions, ReportFiles, RunFiles, RunMetrics, Statistics

N_RESAMPLES = 2000
CONFIDENCE = 0.95
ALPHA = 0.05  # significance level of the McNemar tests
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


def estimates(true: np.ndarray, predicted: np.ndarray, k: int, seed: int) -> dict[str, Estimate]:
    """Accuracy and macro F1 with 95 % percentile-bootstrap intervals over the images."""
    from scipy.stats import bootstrap  # imported when statistics are computed, not when reused

    n = len(true)
    if n == 0:
        nan = float("nan")
        return {"accuracy": Estimate(nan, nan, nan, 0), "macro_f1": Estimate(nan, nan, nan, 0)}
    out = {}
    for name, metric in (("accuracy", accuracy), ("macro_f1", macro_f1)):
        def statistic(t: np.ndarray, p: np.ndarray, axis: int = -1, metric=metric) -> np.ndarray:
            return metric(confusion_matrices(np.moveaxis(t, axis, -1), np.moveaxis(p, axis, -1), k))

        value = float(statistic(true, predicted))
        if n == 1:
            out[name] = Estimate(value, value, value, n)
            continue
        result = bootstrap((true, predicted), statistic, paired=True, vectorized=True,
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


def leaked_validation_files(eda: EdaSummary) -> set[str]:
    """Validation files with an exact or near copy in training (EDA duplicate groups)."""
    return {f["file"] for g in eda.duplicates["groups"] if g["cross_split"]
            for f in g["files"] if f["split"] == "validation"}


def experiment_statistics(predictions: Predictions, leaked: set[str], seed: int) -> dict[str, Any]:
    k = len(predictions.classes)
    keep = np.array([f not in leaked for f in predictions.files], dtype=bool)
    clean = predictions.subset(keep)
    cm = confusion_matrices(predictions.true, predictions.predicted, k)
    scores = per_class(cm)
    return {
        "n_val": len(predictions.files),
        "all": {m: e.as_dict() for m, e in estimates(predictions.true, predictions.predicted, k, seed).items()},
        "leak_free": {m: e.as_dict() for m, e in estimates(clean.true, clean.predicted, k, seed).items()},
        "per_class": [{"class": c, "precision": float(scores["precision"][i]), "recall": float(scores["recall"][i]),
                       "f1": float(scores["f1"][i]), "support": int(scores["support"][i])}
                      for i, c in enumerate(predictions.classes)],
        "most_confused": most_confused(cm, predictions.classes),
    }


def comparisons(runs: dict[str, RunMetrics], predictions: dict[str, Predictions],
                best: str) -> list[McNemar]:
    """Best vs every other experiment, then frozen vs fine-tuned per architecture."""
    pairs = [(best, name) for name in predictions if name != best]
    for pair in selection.variant_pairs([n for n in runs if n in predictions], runs.__getitem__):
        if pair not in pairs and pair[::-1] not in pairs:
            pairs.append(pair)
    tests = []
    for a, b in pairs:
        pa, pb = predictions[a], predictions[b]
        if pa.files != pb.files:
            continue  # different validation images (e.g. another subset): not comparable
        tests.append(mcnemar(a, b, pa.predicted == pa.true, pb.predicted == pb.true))
    return tests


def parameter_trend(runs: dict[str, RunMetrics]) -> dict[str, Any] | None:
    """Spearman's rank correlation between parameters and accuracy, one point per
    architecture (its best variant), ordered by parameters; None below three architectures."""
    from scipy.stats import spearmanr

    best = selection.best_per_architecture(runs, runs.__getitem__)
    if len(best) < TREND_MIN_ARCHITECTURES:
        return None
    names = sorted(best.values(), key=lambda n: runs[n].params_total)
    rho = spearmanr([runs[n].params_total for n in names], [runs[n].accuracy for n in names]).statistic
    return {"experiments": names, "rho": None if np.isnan(rho) else float(rho)}


def compute(config: Config) -> Statistics:
    """Statistics of every finished experiment whose predictions.csv is readable."""
    report = ReportFiles(config.report_dir)
    eda = EdaSummary.read_if_exists(report.eda)
    if eda is None:
        raise MonkeyReportError(f"{report.eda}: not found; run `monkeyreport eda` first")
    leaked = leaked_validation_files(eda)
    runs: dict[str, RunMetrics] = {}
    predictions: dict[str, Predictions] = {}
    problems: list[str] = []
    for exp in config.experiments:
        files = RunFiles.of(config.runs_dir, exp.name)
        if not (files.metrics.is_file() and files.predictions.is_file()):
            continue
        try:
            runs[exp.name] = RunMetrics.read(files.metrics)
            predictions[exp.name] = Predictions.read(files.predictions)
        except MonkeyReportError as exc:  # a damaged file: that experiment has no statistics
            runs.pop(exp.name, None)
            problems.append(str(exc))
    experiments = {name: experiment_statistics(p, leaked, config.seed) for name, p in predictions.items()}
    best = selection.best(runs, runs.__getitem__)
    tests = comparisons(runs, predictions, best) if best else []
    return Statistics(n_resamples=N_RESAMPLES, confidence=CONFIDENCE, alpha=ALPHA, seed=config.seed,
                      n_leaked=len(leaked), best=best, experiments=experiments,
                      mcnemar=[t.as_dict() for t in tests], parameters=parameter_trend(runs), problems=problems)


def run_stage(config: Config, options: Options) -> StageOutcome:
    """The pipeline's stats stage: stats.json from the predictions of every finished run."""
    start = time.perf_counter()
    path = ReportFiles(config.report_dir).statistics
    statistics = compute(config)
    statistics.write(path)
    return StageOutcome(f"stats {timed(start)}: {len(statistics.experiments)} experiment(s), "
                        f"{len(statistics.mcnemar)} McNemar test(s) -> {path}")
