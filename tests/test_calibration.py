"""Calibration (calibration.py, the stats stage): the ECE and reliability bins of a run's
probabilities, by hand and against torchmetrics, and the report's verdict on them."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from test_render import project  # noqa: F401  (module fixture reused)
from torchmetrics.functional.classification import multiclass_calibration_error

from monkeyreport import calibration
from monkeyreport.results import Predictions, Statistics


def test_ece_of_a_tiny_predictions_file_matches_a_hand_computation(tmp_path):
    # Confidences 0.91 (right) and 0.89 (wrong) share the bin [13/15, 14/15): accuracy 0.5,
    # mean confidence 0.9; 0.62 (right) and 0.45 (wrong) are alone in theirs.
    probabilities = np.array([[0.91, 0.05, 0.04], [0.89, 0.06, 0.05], [0.30, 0.62, 0.08], [0.45, 0.30, 0.25]])
    true = np.array([0, 1, 1, 2])
    path = tmp_path / "predictions.csv"
    Predictions(["a.jpg", "b.jpg", "c.jpg", "d.jpg"], ["n0", "n1", "n2"], true, probabilities.argmax(1),
                probabilities).write(path)
    read = Predictions.read(path)
    result = calibration.reliability(read.probabilities, read.true)
    expected = (2 * abs(0.5 - 0.9) + abs(1 - 0.62) + abs(0 - 0.45)) / 4
    assert result["ece"] == pytest.approx(expected, abs=1e-9)
    assert result["n"] == 4 and result["accuracy"] == 0.5
    assert result["mean_confidence"] == pytest.approx((0.91 + 0.89 + 0.62 + 0.45) / 4)
    bins = result["bins"]
    assert len(bins) == calibration.BINS and sum(b["count"] for b in bins) == 4
    assert bins[13] | {"confidence": round(bins[13]["confidence"], 9)} == {
        "lower": pytest.approx(13 / 15), "upper": pytest.approx(14 / 15), "count": 2, "confidence": 0.9,
        "accuracy": 0.5}
    assert bins[9]["count"] == 1 and bins[6]["count"] == 1
    assert all(b["confidence"] is None and b["accuracy"] is None for b in bins if not b["count"])


def test_ece_equals_torchmetrics_with_certain_and_edge_confidences():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(300, 10)) * rng.uniform(0.1, 6, size=(300, 1))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probabilities[:5] = np.eye(10)[:5]  # confidence exactly 1: the last bin
    probabilities[5:10] = 0.0
    probabilities[5:10, :2] = [1 / 3 + 1 / 3, 1 / 3]  # 2/3, a bin edge
    true = rng.integers(0, 10, 300)
    true[:3] = [0, 1, 2]  # some certain predictions right, the others wrong
    ours = calibration.reliability(probabilities, true)["ece"]
    theirs = multiclass_calibration_error(torch.tensor(probabilities), torch.tensor(true), num_classes=10,
                                          n_bins=calibration.BINS, norm=calibration.NORM)
    assert ours == pytest.approx(float(theirs), abs=1e-6)  # torchmetrics computes in float32
    assert calibration.reliability(probabilities, true)["bins"][-1]["count"] >= 5


def test_stats_record_each_runs_ece_and_the_mean_over_seeds(project):  # noqa: F811
    stats = Statistics.read(project["report"] / "stats" / "stats.json")
    assert stats.calibration == {"bins": calibration.BINS, "norm": "l1", "trusted_below": calibration.TRUSTED_BELOW}
    for name, group in stats.groups.items():
        metrics = json.loads((project["runs"] / name / "metrics.json").read_text())
        run = stats.experiments[group["runs"][0]]["calibration"]
        # Every fake prediction has confidence 0.8: the ECE is |accuracy - 0.8|.
        assert run["ece"] == pytest.approx(abs(metrics["accuracy"] - 0.8), abs=1e-9)
        assert group["ece"]["mean"] == pytest.approx(run["ece"]) and group["ece"]["n"] == 1
        assert group["train_seconds"]["mean"] == metrics["train_seconds"]
        assert group["epochs"]["mean"] == metrics["epochs"]


def test_the_report_says_which_models_are_below_the_ece_threshold(project):  # noqa: F811
    html = (project["report"] / "report.html").read_text()
    stats = Statistics.read(project["report"] / "stats" / "stats.json")
    table = re.search(r'<table class="calibration".*?</table>', html, re.DOTALL).group(0)
    rows = re.findall(r"<tr><td>(.*?)</td>.*?<td>(sí|no)</td></tr>", table, re.DOTALL)
    verdicts = [stats.experiments[g["runs"][0]]["calibration"]["ece"] < calibration.TRUSTED_BELOW
                for g in stats.groups.values()]
    assert [v == "sí" for _, v in rows] == verdicts and any(verdicts) and not all(verdicts)
    manifest = json.loads((project["report"] / "figures" / "figures.json").read_text())
    assert (project["report"] / manifest["reliability"]).is_file()
    assert re.search(r'<img src="figures/reliability.png".*?Figura \d+\.</span> Diagramas de fiabilidad', html, re.DOTALL)
