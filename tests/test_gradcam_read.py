"""Grad-CAM read as facts: concentration, agreement, the images shown, each model's summary
and the map's native resolution (interpret.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monkeyreport.interpret import (TOP_FRACTION, agreement, cam_summary, choose_cam_images, concentration,
                                    grad_cam_maps)
from monkeyreport.models import create
from monkeyreport.results import Predictions


def test_concentration_is_the_share_of_mass_in_the_brightest_tenth():
    assert concentration(np.full((10, 10), 0.3)) == pytest.approx(TOP_FRACTION)  # flat: 10 % of the mass
    peaked = np.zeros((10, 10))
    peaked[:2, :5] = 1.0  # all the mass in 10 pixels, 10 % of 100
    assert concentration(peaked) == pytest.approx(1.0)
    half = np.zeros((10, 10))
    half[0, :] = 1.0  # 10 brightest pixels hold it all
    half[1:, :] = 1.0 / 9  # ... and the other 90 as much again
    assert concentration(half) == pytest.approx(0.5)
    assert concentration(np.zeros((7, 7))) is None  # an empty map has no concentration


def test_agreement_is_pearson_correlation_and_none_for_a_flat_map():
    rng = np.random.default_rng(0)
    a = rng.random((14, 14))
    assert agreement(a, 3 * a + 1) == pytest.approx(1.0)  # the same map up to scale
    assert agreement(a, 1 - a) == pytest.approx(-1.0)
    b = rng.random((14, 14))
    assert agreement(a, b) == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    assert agreement(a, np.zeros((14, 14))) is None


def predictions(files: list[str], true: list[int], predicted: list[int]) -> Predictions:
    probabilities = np.eye(4)[predicted] * 0.7 + 0.075
    return Predictions(files, ["n0", "n1", "n2", "n3"], np.array(true), np.array(predicted), probabilities)


def test_images_shown_include_misclassified_ones_for_up_to_half_of_the_species():
    files = [f"v/n{k}/{i}.jpg" for k in range(4) for i in range(3)]
    true = [k for k in range(4) for _ in range(3)]
    frozen = list(true)
    tuned = list(true)
    frozen[1] = tuned[1] = 3  # n0's second image: both models miss it
    tuned[4] = 0  # n1's second image: one model misses it
    frozen[8] = 0  # n2's third image: one model misses it, but it has a copy in training
    frozen[9] = tuned[9] = 0  # n3's first image: both miss it
    chosen = choose_cam_images([predictions(files, true, frozen), predictions(files, true, tuned)],
                               leaked={"v/n2/2.jpg"})
    assert [c["class"] for c in chosen] == ["n0", "n1", "n2", "n3"]
    # Two of four species (half) show an error: those that both models miss come first.
    assert [(c["file"], c["wrong"]) for c in chosen] == [("v/n0/1.jpg", 2), ("v/n1/0.jpg", 0), ("v/n2/0.jpg", 0),
                                                           ("v/n3/0.jpg", 2)]
    all_right = choose_cam_images([predictions(files, true, true)], leaked=set())
    assert [c["file"] for c in all_right] == ["v/n0/0.jpg", "v/n1/0.jpg", "v/n2/0.jpg", "v/n3/0.jpg"]


def panel(correct: list[bool], concentrations: list[float | None], agreements: list[float | None]) -> dict:
    return {"predictions": [{"correct": c, "concentration": k} for c, k in zip(correct, concentrations)],
            "agreement": agreements}


def test_summary_counts_right_and_empty_maps_and_averages_agreement_by_outcome():
    reference = panel([True, True, False, True], [0.2, 0.3, None, 0.4], [])
    other = panel([True, False, False, True], [0.3, 0.5, 0.2, 0.1], [0.9, 0.6, None, 0.9])
    first = cam_summary(reference, None)
    assert (first["n"], first["n_correct"], first["n_empty"]) == (4, 3, 1)
    assert first["concentration"] == pytest.approx(0.3) and first["concentration_wrong"] is None
    assert "agreement" not in first  # the reference is not compared with itself
    second = cam_summary(other, reference)
    assert second["concentration_correct"] == pytest.approx(0.2) and second["concentration_wrong"] == pytest.approx(0.35)
    assert second["agreement"] == pytest.approx(0.8) and second["agreement_level"] == "high"
    assert (second["agreement_min"], second["agreement_max"]) == (0.6, 0.9)
    assert second["agreement_both_correct"] == pytest.approx(0.9)  # images 1 and 4
    assert second["agreement_any_wrong"] == pytest.approx(0.6) and second["n_any_wrong"] == 2
    assert second["more_concentrated"] == 2  # images 1 and 2; image 3 has an empty reference map
    low = cam_summary(panel([True], [0.2], [0.1]), panel([True], [0.2], []))
    assert low["agreement_level"] == "low"


@pytest.mark.parametrize("architecture, size", [("resnet34", (7, 7)), ("alexnet", (13, 13))])
def test_map_resolution_is_the_target_layers_grid_at_224_pixels(architecture, size):
    torch.manual_seed(0)
    model = create(architecture, 3, "none").model.eval()
    maps, grid = grad_cam_maps(model, architecture, torch.rand(1, 3, 224, 224), [0])
    assert grid == size and maps.shape == (1, 224, 224)
