"""findings: each claim only where its support rule holds, with the size of each effect (no torch)."""

from __future__ import annotations

import math

import pytest

from monkeyreport import figures
from monkeyreport.findings import (SHARED_MIN_ARCHITECTURES, SHARED_MIN_IMAGES, diagnosis, findings,
                                   shared_confusions)

from test_render import finding_row, mcnemar_test, word


def confused(name, architecture, errors, pair=("n0", "n9")):
    """A finished row whose most confused pair is `pair`, with `errors` photographs."""
    return {"name": name, "label": name, "architecture": architecture, "frozen": False, "transfer": True,
            "best": False, "stats": {"per_class": [], "most_confused": [
                {"pair": list(pair), "errors": errors, "a_as_b": errors, "b_as_a": 0}]}}


def test_a_shared_confusion_needs_distinct_architectures_and_enough_photographs():
    enough = SHARED_MIN_IMAGES
    variants = shared_confusions([confused("frozen", "lite0", enough + 2), confused("tuned", "lite0", enough + 2)])
    assert variants["shared"] == [] and [s["reason"] for s in variants["repeated"]] == ["one_architecture"]
    few = shared_confusions([confused("lite0", "lite0", enough - 1), confused("cnn", "vanilla_cnn", enough + 5)])
    assert few["shared"] == [] and [s["reason"] for s in few["repeated"]] == ["few_images"]
    shared = shared_confusions([confused("lite0", "lite0", enough), confused("cnn", "vanilla_cnn", enough),
                                confused("other", "resnet34", 1, ("n1", "n2"))])
    assert [(s["pair"], [r["name"] for r in s["supporting"]]) for s in shared["shared"]] == [
        (["n0", "n9"], ["lite0", "cnn"])]
    assert shared["repeated"] == []  # a pair one experiment lists is not a repetition
    assert shared["rule"] == {"min_architectures": SHARED_MIN_ARCHITECTURES, "min_images": SHARED_MIN_IMAGES}


def test_the_shared_confusion_finding_states_its_rule():
    rows = [finding_row("v", "vanilla_cnn", False, 0.5), finding_row("e", "lite0", True, 0.9)]
    rows[1]["best"] = True
    pair = {"pair": [{"latin": "Alouatta palliata"}, {"latin": "Aotus nigriceps"}], "rows": rows,
            "errors": [4, 3], "supporting": rows}
    (found,) = [f for f in findings(rows, [], 10, 0, [pair]) if f["kind"] == "confusions"]
    text = word([found])
    assert f"al menos {['', 'una', 'dos', 'tres'][SHARED_MIN_ARCHITECTURES]} arquitecturas distintas" in text
    assert f"{['', 'una', 'dos', 'tres', 'cuatro'][SHARED_MIN_IMAGES]} fotografías o más" in text
    assert ("Cumple esa regla <em>Alouatta palliata</em> con <em>Aotus nigriceps</em> "
            "(vanilla_cnn y lite0 (congelado))") in text


def history(val_loss, val_accuracy, train_accuracy=None):
    return [{"epoch": e, "train_loss": 1.0, "val_loss": loss, "val_accuracy": acc, "val_macro_f1": acc,
             "train_accuracy": math.nan if train_accuracy is None else train_accuracy[e - 1]}
            for e, (loss, acc) in enumerate(zip(val_loss, val_accuracy), 1)]


def curve_rows(tuned_last: float):
    """Lite0 frozen (0.98 on 100 images) and fine-tuned, whose loss rises after epoch 2 while
    its accuracy falls from 0.95 to `tuned_last`."""
    from dataclasses import replace

    rows = [finding_row("f", "lite0", True, 0.98), finding_row("t", "lite0", False, tuned_last)]
    for r in rows:
        r["run"] = replace(r["run"], n_val=100)
        r["seed"] = 42
    rows[0]["best"] = True
    rows[0]["history"] = history([0.5, 0.3, 0.25, 0.2], [0.9, 0.95, 0.97, 0.98])
    rows[1]["history"] = history([0.6, 0.4, 0.5, 0.8], [0.9, 0.95, 0.94, tuned_last], [0.8, 0.96, 0.99, 1.0])
    return rows


def test_overfitting_says_how_much_accuracy_the_rise_of_the_loss_cost():
    rows = curve_rows(0.93)
    (found,) = [f for f in findings(rows, [], 10, 0) if f["kind"] == "overfitting"]
    (o,) = found["runs"]
    c = o["curves"]
    assert o["row"]["name"] == "t" and (c["best"]["epoch"], c["last"]["epoch"]) == (2, 4)
    assert c["loss_rise"] == pytest.approx(1.0) and c["images_lost"] == 2
    assert c["best"]["gap"] == pytest.approx(0.01) and c["last"]["gap"] == pytest.approx(0.07)
    # 5 images behind the frozen variant; stopping at epoch 2 recovers 2 of them: under half.
    assert (o["partner"]["row"]["name"], o["partner"]["behind"], o["partner"]["share"]) == ("f", 5, "part")
    text = word([found])
    assert "llegó a su mínimo en la época 2 (0,400) y subió a 0,800 en la época 4, un 100 % más" in text
    assert "pasó de 0,9500 a 0,9300 (dos aciertos menos sobre 100 imágenes)" in text
    assert "de +1,0 a +7,0 puntos porcentuales" in text
    assert "habría recuperado dos imágenes: la mayor parte de la diferencia ya existía en esa época" in text
    assert "causa probable" not in text and "se sobreajustaron" not in text


@pytest.mark.parametrize("tuned_last", [0.95, 0.96])
def test_a_rise_of_the_loss_that_cost_no_accuracy_explains_nothing(tuned_last):
    (found,) = [f for f in findings(curve_rows(tuned_last), [], 10, 0) if f["kind"] == "overfitting"]
    assert found["runs"][0]["partner"]["share"] == "none"
    assert "no habría recuperado ninguna" in word([found])


def test_no_overfitting_claim_below_the_rise_or_at_the_last_epoch():
    rows = curve_rows(0.93)
    rows[1]["history"] = history([0.6, 0.4, 0.42, 0.43], [0.9, 0.95, 0.94, 0.93])  # +7.5 %: below the rule
    assert "overfitting" not in [f["kind"] for f in findings(rows, [], 10, 0)]


def test_freezing_is_worded_about_two_trained_models_with_their_recipe_and_seeds():
    rows = [finding_row("af", "AlexNet", True, 0.94), finding_row("at", "AlexNet", False, 0.11)]
    rows[0]["best"] = True
    found = [f for f in findings(rows, [mcnemar_test("af", "at", 0.0001)], 10, 0) if f["kind"] == "freezing"]
    text = word(found)
    assert "con la receta base y una semilla, el modelo con la red troncal congelada obtuvo un resultado" in text
    assert "compara estos dos entrenamientos, no las dos estrategias" in text
    assert "congelar la red troncal" not in text  # two trained models, not the strategy in general
    rows[1]["recipe"] = {"learning_rate": 0.0001}
    found = [f for f in findings(rows, [mcnemar_test("af", "at", 0.3)], 10, 0) if f["kind"] == "freezing"]
    text = word(found)
    assert "cada uno con su receta" in text and "no es estadísticamente significativa" in text
    assert "no las dos estrategias" not in text  # nothing claimed, nothing to scope


def leak_row(name, arch, leaked, clean, n_leaked=10, n_clean=40):
    row = finding_row(name, arch, False, clean)
    row["stats"] = {"leak_free": {"accuracy": {"value": clean, "n": n_clean}},
                    "leaked": {"accuracy": {"value": leaked, "n": n_leaked}}}
    row["group"] = {"leak_free": {"accuracy": {"mean": clean}}, "leaked": {"accuracy": {"mean": leaked}}}
    row["n_seeds"] = 1
    return row


def test_leakage_finding_compares_accuracy_on_leaked_photographs_with_the_rest():
    rows = [leak_row("v", "vanilla_cnn", 0.73, 0.51), leak_row("e", "lite0", 0.95, 0.96)]
    rows[1]["best"] = True
    (found,) = [f for f in findings(rows, [], 10, 12) if f["kind"] == "leakage"]
    assert [m["difference"] for m in found["memorisation"]] == pytest.approx([0.22, -0.01])
    assert found["widest"]["row"]["name"] == "v"
    text = word([found])
    assert "supera a la de las demás en uno de los dos modelos" in text
    assert "vanilla_cnn: 0,730 en las 10 fotografías con copia frente a 0,510 en las 40 restantes" in text
    # 7 of 10 against about 20 of 40 right: a gap that chance gives often, so no memory is claimed.
    assert found["widest"]["p"] > 0.05 and "puede deberse al azar" in text and "recuerda parte" not in text
    assert found["widest"]["p_holm"] == pytest.approx(min(1.0, 2 * found["widest"]["p"]))  # two models tested
    assert "corregida con el método de Holm sobre los dos modelos" in text
    rows = [leak_row("v", "vanilla_cnn", 0.9, 0.5, n_leaked=60, n_clean=200)]
    (found,) = [f for f in findings(rows, [], 10, 60) if f["kind"] == "leakage"]
    assert found["widest"]["p_holm"] < 0.001 and "el modelo recuerda parte de las imágenes" in word([found])
    rows = [leak_row("v", "vanilla_cnn", 0.5, 0.51), leak_row("e", "lite0", 0.95, 0.96)]
    rows[1]["best"] = True
    (found,) = [f for f in findings(rows, [], 10, 12) if f["kind"] == "leakage"]
    assert "Ningún modelo acierta más en las fotografías con copia" in word([found])


def test_diagnosis_names_the_weakest_species_what_it_is_taken_for_and_the_train_validation_gap():
    (_, row) = curve_rows(0.93)
    row["stats"] = {"per_class": [
        {"class": "n0", "f1": 0.9, "recall": 0.95, "mistaken_for": None},
        {"class": "n1", "f1": 0.8, "recall": 0.7, "mistaken_for": {"class": "n2", "images": 3}},
        {"class": "n2", "f1": 0.8, "recall": 0.9, "mistaken_for": None}]}
    species = {"n1": {"latin": "Erythrocebus patas"}, "n2": {"latin": "Cacajao calvus"}}
    d = diagnosis(row, species)
    assert d["weakest"]["class"] == "n1" and d["weakest"]["species"]["latin"] == "Erythrocebus patas"
    assert d["weakest"]["taken_for"] == {"class": "n2", "images": 3, "species": {"latin": "Cacajao calvus"}}
    assert d["curves"]["last"]["train_accuracy"] == 1.0 and d["curves"]["last"]["gap"] == pytest.approx(0.07)
    row["history"] = history([0.6, 0.4], [0.9, 0.95])  # an older history.csv: no training accuracy
    assert diagnosis(row, species)["curves"]["last"]["gap"] is None


def test_training_curves_plot_training_accuracy_where_the_history_has_it(monkeypatch, tmp_path):
    from conftest import REPO
    from monkeyreport.figure_words import figure_words

    words = figure_words(REPO / "templates")
    drawn = []
    monkeypatch.setattr(figures, "save", lambda fig, path: drawn.append(fig))
    with_train = history([0.6, 0.4], [0.9, 0.95], [0.8, 0.97])
    without = history([0.6, 0.4], [0.9, 0.95])
    figures.training_curves([("A", with_train), ("B", without)], words, tmp_path / "curves.png")
    figures.training_curves([("B", without)], words, tmp_path / "old.png")
    both, old = drawn

    def accuracy_axes(fig):  # the twin (right) axes hold the accuracy curves
        return [ax for ax in fig.axes if ax.get_ylim() == (0, 1)]

    assert [len(ax.get_lines()) for ax in accuracy_axes(both)] == [2, 2]
    assert [len(ax.get_lines()) for ax in accuracy_axes(old)] == [1]
    assert list(accuracy_axes(both)[0].get_lines()[0].get_ydata()) == [0.8, 0.97]
    label = words["curves"]["train_accuracy"]
    assert label in [t.get_text() for t in both.legends[0].get_texts()]
    assert label not in [t.get_text() for t in old.legends[0].get_texts()]


def test_a_top_loss_gallery_shows_each_validation_photograph_once():
    import numpy as np

    from monkeyreport.interpret import top_losses
    from monkeyreport.results import Predictions

    probs = np.array([[0.1, 0.9], [0.1, 0.9], [0.2, 0.8], [0.6, 0.4], [0.9, 0.1]])
    p = Predictions(["a", "a_copy", "b", "c", "d"], ["x", "y"], np.zeros(5, dtype=np.int64), probs.argmax(1), probs)
    assert [r["file"] for r in top_losses(p, n=3)] == ["a", "a_copy", "b"]
    assert [r["file"] for r in top_losses(p, n=3, copies=[["a", "a_copy"]])] == ["a", "b", "c"]
