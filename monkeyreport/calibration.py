"""Calibration of a run's predicted probabilities: expected calibration error and the data of
its reliability diagram, from predictions.csv, without torch.

The definition is torchmetrics' `multiclass_calibration_error(norm="l1")`: each image's
confidence is its top probability and it counts as right when that class is the true one;
images fall into `bins` equal-width confidence bins (a bin holds confidences in
[lower, upper), the last one also 1.0), and the ECE is the mean over bins of
|accuracy - mean confidence|, weighted by the share of images in the bin. The stats stage
runs within `render`, which never imports torch, so this is a numpy port; tests check it
against torchmetrics.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BINS = 15
NORM = "l1"
# The galleries' probabilities are read as confidences only below this ECE: on average the
# stated confidence is then within 5 percentage points of the share of images it gets right.
TRUSTED_BELOW = 0.05


def reliability(probabilities: np.ndarray, true: np.ndarray, bins: int = BINS) -> dict[str, Any]:
    """ECE, overall mean confidence and accuracy, and per bin (lower, upper, count, mean
    confidence, accuracy; None for an empty bin) of probabilities shaped (images, classes)."""
    confidence = probabilities.max(axis=1)
    right = (probabilities.argmax(axis=1) == true).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # torch.bucketize(right=True) - 1: the last edge at or below the confidence; 1.0 stays in the last bin.
    index = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=bins)
    right_sum = np.bincount(index, weights=right, minlength=bins)
    filled = count > 0
    mean_conf = np.divide(conf_sum, count, out=np.zeros(bins), where=filled)
    accuracy = np.divide(right_sum, count, out=np.zeros(bins), where=filled)
    n = len(true)
    ece = float(np.sum(np.abs(accuracy - mean_conf) * count) / n) if n else float("nan")
    return {
        "ece": ece, "n": n,
        "mean_confidence": float(confidence.mean()) if n else float("nan"),
        "accuracy": float(right.mean()) if n else float("nan"),
        "bins": [{"lower": float(edges[i]), "upper": float(edges[i + 1]), "count": int(count[i]),
                  "confidence": float(mean_conf[i]) if filled[i] else None,
                  "accuracy": float(accuracy[i]) if filled[i] else None} for i in range(bins)],
    }


def rule() -> dict[str, Any]:
    """What stats.json records of how calibration was measured and judged."""
    return {"bins": BINS, "norm": NORM, "trusted_below": TRUSTED_BELOW}
