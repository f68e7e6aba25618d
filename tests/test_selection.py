"""The facts decided once: the best run, the frozen/fine-tuned pairs and the baseline."""

from __future__ import annotations

from dataclasses import replace

from monkeyreport import architectures, selection
from monkeyreport.selection import Entry

RUNS = {  # experiment name -> its facts, in config order
    "scratch": Entry("vanilla_cnn", False, 0.46, 0.46),
    "alex_frozen": Entry("alexnet", True, 0.94, 0.93),
    "alex_tuned": Entry("alexnet", False, 0.94, 0.95),
    "resnet_frozen": Entry("resnet34", True, 0.90, 0.90),
    "b0_tuned": Entry("efficientnet_b0", False, 0.91, 0.91),
    "b0_frozen": Entry("efficientnet_b0", True, 0.89, 0.88),
}


def test_best_breaks_an_accuracy_tie_by_macro_f1():
    assert selection.best(RUNS, RUNS.__getitem__) == "alex_tuned"
    assert selection.top(RUNS, RUNS.__getitem__) == ["alex_tuned"]
    assert selection.best([], RUNS.__getitem__) is None and selection.top([], RUNS.__getitem__) == []


def test_a_full_tie_has_several_top_runs_and_the_first_is_best():
    runs = {"a": Entry("alexnet", True, 0.9, 0.8), "b": Entry("resnet34", True, 0.9, 0.8),
            "c": Entry("alexnet", False, 0.9, 0.7)}
    assert selection.best(runs, runs.__getitem__) == "a"
    assert selection.top(runs, runs.__getitem__) == ["a", "b"]


def test_best_per_architecture_in_order_of_first_appearance():
    assert selection.best_per_architecture(RUNS, RUNS.__getitem__) == {
        "vanilla_cnn": "scratch", "alexnet": "alex_tuned", "resnet34": "resnet_frozen",
        "efficientnet_b0": "b0_tuned"}


def test_variant_pairs_skip_the_baseline_and_architectures_with_one_variant():
    runs = RUNS | {"scratch_again": Entry("vanilla_cnn", True, 0.5, 0.5)}  # a "frozen" baseline
    assert selection.variant_pairs(runs, runs.__getitem__) == [
        ("alex_frozen", "alex_tuned"), ("b0_frozen", "b0_tuned")]


def test_every_fine_tuned_recipe_is_paired_with_the_frozen_variant():
    runs = RUNS | {"b0_tuned_recipe": Entry("efficientnet_b0", False, 0.95, 0.95)}
    assert selection.variant_pairs(runs, runs.__getitem__)[1:] == [
        ("b0_frozen", "b0_tuned"), ("b0_frozen", "b0_tuned_recipe")]


def test_baseline_is_found_by_its_role_under_any_experiment_name(monkeypatch):
    runs = {"my_own_net": Entry("tiny_cnn", False, 0.3, 0.3), "from_scratch": Entry("vanilla_cnn", False, 0.4, 0.4),
            "transfer": Entry("resnet34", False, 0.9, 0.9)}
    assert selection.baselines(runs, runs.__getitem__) == ["from_scratch"]
    assert selection.transfers(runs, runs.__getitem__) == ["my_own_net", "transfer"]  # unknown: not a baseline
    tiny = replace(architectures.facts("vanilla_cnn"), name="tiny_cnn", title="TinyCNN")
    monkeypatch.setitem(architectures.ARCHITECTURES, "tiny_cnn", tiny)
    assert selection.baselines(runs, runs.__getitem__) == ["my_own_net", "from_scratch"]
    assert selection.transfers(runs, runs.__getitem__) == ["transfer"]
    assert selection.is_baseline("tiny_cnn") and not selection.is_baseline("alexnet")
