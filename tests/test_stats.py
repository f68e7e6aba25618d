"""stats: bootstrap intervals, leak-free metrics, McNemar tests, per-class metrics (no torch)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score
from typer.testing import CliRunner

from monkeyreport import pipeline, stats
from monkeyreport.cli import app
from monkeyreport.results import Predictions
from monkeyreport.spanish_format import decimal

from test_records import RECORDS
from test_render import copy_project, project  # noqa: F401  (module fixture reused)

runner = CliRunner()


def labels(n: int, k: int, error_rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    wrong = rng.random(n) < error_rate
    return true, np.where(wrong, (true + rng.integers(1, k, n)) % k, true)


def test_metrics_equal_torchmetrics_even_with_absent_classes():
    true, pred = labels(272, 10, 0.3, 0)
    pred[pred == 7] = 6  # class 7 never predicted
    true[true == 3], pred[pred == 3] = 4, 4  # class 3 absent altogether
    cm = stats.confusion_matrices(true, pred, 10)
    t, p = torch.tensor(true), torch.tensor(pred)
    assert stats.accuracy(cm) == pytest.approx(float(multiclass_accuracy(p, t, 10, average="micro")), abs=1e-6)
    assert stats.macro_f1(cm) == pytest.approx(float(multiclass_f1_score(p, t, 10, average="macro")), abs=1e-6)


def test_bootstrap_interval_is_seeded_and_as_wide_as_theory_says():
    true, pred = labels(272, 10, 0.05, 1)
    first = stats.estimates(true, pred, 10, seed=42)
    assert first == stats.estimates(true, pred, 10, seed=42)
    acc = first["accuracy"]
    assert acc.low < acc.value < acc.high and acc.n == 272
    # Normal approximation of a proportion: 1.96 * sqrt(p(1-p)/n), about 2.6 points here.
    expected = 1.96 * math.sqrt(acc.value * (1 - acc.value) / 272)
    assert (acc.high - acc.low) / 2 == pytest.approx(expected, rel=0.25)
    f1 = first["macro_f1"]
    assert f1.low < f1.value < f1.high


def test_exact_mcnemar_counts_only_discordant_images():
    right_a = np.array([True] * 9 + [False] * 1 + [True] * 50 + [False] * 20)
    right_b = np.array([False] * 9 + [True] * 1 + [True] * 50 + [False] * 20)
    test = stats.mcnemar("a", "b", right_a, right_b)
    assert (test.only_a_right, test.only_b_right) == (9, 1)
    assert test.p_value == pytest.approx(22 / 1024)  # 2 * P(X <= 1), X ~ Bin(10, 1/2)
    assert test.significant
    same = stats.mcnemar("a", "b", right_a, right_a)
    assert same.p_value == 1.0 and not same.significant


def duplicated_eda():
    """eda.json with one training/validation group (x leaked) and one group of two validation
    copies (y, z)."""
    return replace(RECORDS["eda"], duplicates={"groups": [
        {"cross_split": True, "files": [{"file": "training/n0/a.jpg", "split": "training"},
                                        {"file": "validation/n0/x.jpg", "split": "validation"}]},
        {"cross_split": False, "files": [{"file": "validation/n1/y.jpg", "split": "validation"},
                                         {"file": "validation/n1/z.jpg", "split": "validation"}]},
    ]})


def test_leak_free_metrics_leave_out_leaked_images_and_count_validation_copies_once():
    eda = duplicated_eda()
    leaked, copies = eda.leaked_validation_files, eda.validation_copies
    assert leaked == {"validation/n0/x.jpg"}
    assert copies == [["validation/n1/y.jpg", "validation/n1/z.jpg"]]
    files = ["validation/n0/x.jpg", "validation/n1/y.jpg", "validation/n1/z.jpg", "validation/n0/w.jpg",
             "validation/n1/v.jpg"]
    # x right (leaked), y right, z (its copy) wrong as n0, w wrong as n1, v wrong as n0.
    predictions = Predictions(files, ["n0", "n1"], np.array([0, 1, 1, 0, 1]), np.array([0, 1, 0, 1, 0]),
                              np.zeros((5, 2)))
    result = stats.experiment_statistics(predictions, leaked, seed=0, copies=copies)
    assert result["all"]["accuracy"]["value"] == pytest.approx(2 / 5) and result["all"]["accuracy"]["n"] == 5
    assert (result["n_val"], result["n_leaked"], result["n_photographs"]) == (5, 1, 4)
    # Without the leaked x and with z counted as its photograph y: y, w, v.
    assert result["leak_free"]["accuracy"]["value"] == pytest.approx(1 / 3)
    assert result["leak_free"]["accuracy"]["n"] == 3
    assert result["leaked"]["accuracy"]["value"] == 1.0 and result["leaked"]["accuracy"]["n"] == 1
    assert [c["support"] for c in result["per_class"]] == [2, 3]  # per class: every image
    # Pairs and what each class is taken for: each photograph once (z is not a second n1-as-n0 error).
    assert result["most_confused"] == [{"pair": ["n0", "n1"], "errors": 2, "a_as_b": 1, "b_as_a": 1}]
    assert [c["mistaken_for"] for c in result["per_class"]] == [{"class": "n1", "images": 1},
                                                                {"class": "n0", "images": 1}]


def test_validation_copies_count_once_in_the_bootstrap():
    true, pred = labels(120, 5, 0.2, 3)
    files = [f"f{i}" for i in range(120)]
    doubled_files = files + [f"{f}_copy" for f in files]
    ids = stats.photographs(doubled_files, [[f, f"{f}_copy"] for f in files])
    assert ids.tolist() == list(range(120)) * 2 and stats.first_copies(ids).tolist() == [True] * 120 + [False] * 120
    once = stats.estimates(true, pred, 5, seed=7)
    doubled = stats.estimates(np.tile(true, 2), np.tile(pred, 2), 5, seed=7, ids=ids)
    # Copies drawn with their photograph: exactly the interval of the photographs alone.
    for metric in ("accuracy", "macro_f1"):
        assert (doubled[metric].value, doubled[metric].low, doubled[metric].high) == pytest.approx(
            (once[metric].value, once[metric].low, once[metric].high))
    assert doubled["accuracy"].n == 240
    naive = stats.estimates(np.tile(true, 2), np.tile(pred, 2), 5, seed=7)  # copies as independent images
    assert naive["accuracy"].high - naive["accuracy"].low < 0.8 * (once["accuracy"].high - once["accuracy"].low)


def test_mcnemar_counts_each_validation_photograph_once(tmp_path):
    from monkeyreport.config import load_config

    from test_training import write_config

    config = load_config(write_config(tmp_path, [{"name": "a", "architecture": "vanilla_cnn"},
                                                 {"name": "b", "architecture": "vanilla_cnn"}], tmp_path, epochs=1))
    files = ["p", "p_copy", "q", "r"]
    true = np.zeros(4, dtype=np.int64)
    # a is right on p and its copy; b wrong on both; both right on q and r.
    predictions = {"a": Predictions(files, ["n0", "n1"], true, np.array([0, 0, 0, 0]), np.zeros((4, 2))),
                   "b": Predictions(files, ["n0", "n1"], true, np.array([1, 1, 0, 0]), np.zeros((4, 2)))}
    per_run = {n: stats.experiment_statistics(p, set(), 0, [["p", "p_copy"]]) for n, p in predictions.items()}
    groups = {n: stats.group_statistics([n], [config.seed], per_run) for n in per_run}
    runs = {n: SimpleNamespace(architecture="vanilla_cnn", frozen=False, macro_f1=0.0,
                               accuracy=per_run[n]["all"]["accuracy"]["value"]) for n in per_run}
    (test,) = stats.comparisons(config, groups, runs, predictions, "a", [["p", "p_copy"]])
    assert (test["mcnemar"][0]["only_a_right"], test["mcnemar"][0]["only_b_right"]) == (1, 0)
    (naive,) = stats.comparisons(config, groups, runs, predictions, "a")
    assert naive["mcnemar"][0]["only_a_right"] == 2


def test_report_shows_intervals_tests_and_per_class_from_stats_json(project):  # noqa: F811
    statistics = json.loads((project["report"] / "stats" / "stats.json").read_text())
    html = (project["report"] / "report.html").read_text()
    best = statistics["best"]
    assert best == "efficientnet_b0_finetuned"
    for name, s in statistics["experiments"].items():
        acc = s["all"]["accuracy"]
        assert s["n_val"] == 6
        assert f"[{decimal(acc['low'], 3)}; {decimal(acc['high'], 3)}]" in html, name
    # McNemar: best against the six others, and no duplicate of a frozen/fine-tuned pair.
    assert len(statistics["comparisons"]) == 6 + 2  # + alexnet and resnet34 pairs (effnet's is a best pair)
    assert [len(c["mcnemar"]) for c in statistics["comparisons"]] == [1] * 8  # one seed: McNemar decides
    assert all(c["test"] == "mcnemar" and c["p_holm"] >= c["p_value"] for c in statistics["comparisons"])
    assert html.count("<table class=\"mcnemar\"") == 1 and "Tabla 3." in html
    # Normalisation stated per experiment as each run recorded it.
    assert "[0,485; 0,456; 0,406]" in html and "[0,5; 0,5; 0,5]" in html or "[0,500; 0,500; 0,500]" in html


def test_no_english_decimal_in_the_report_text(project):  # noqa: F811
    html = (project["report"] / "report.html").read_text()
    text = re.sub(r"<pre.*?</pre>|<code>.*?</code>|Versiones:.*?Semilla|<[^>]+>", " ", html, flags=re.S)
    # A point between digits is a thousands separator only before exactly three digits.
    english = re.findall(r"[^\n]{0,30}\d\.(?!\d{3}(?!\d))\d[^\n]{0,30}", text)
    assert not english, english[:5]
    assert "1.000.000" in text and "0,8333" in text


def test_statistics_recomputed_only_when_predictions_change(project, tmp_path):  # noqa: F811
    p = copy_project(project, tmp_path)
    from monkeyreport.config import load_config

    config = load_config(p["config"])
    path = p["report"] / "stats" / "stats.json"
    path.unlink()
    lines: list[str] = []
    options = pipeline.Options(show_progress=False, echo=lines.append)
    assert pipeline.run(config, options, ["stats"]).ran == ["stats"]
    assert lines[-1].startswith("stats done in ") and lines[-1].endswith(f"-> {path}")
    first = json.loads(path.read_text())
    assert "inputs" not in first  # freshness is the stamp's business (report/.stages/stats.json)
    assert pipeline.run(config, options, ["stats"]).ran == []
    assert lines[-1] == "stats unchanged, skipped"
    assert json.loads(path.read_text()) == first
    predictions = p["runs"] / "vanilla_cnn" / "predictions.csv"
    lines_csv = predictions.read_text().splitlines()
    lines_csv[1] = re.sub(r",n(\d),n\d,", lambda m: f",n{m.group(1)},n{m.group(1)},", lines_csv[1])  # now right
    predictions.write_text("\n".join(lines_csv) + "\n")
    assert pipeline.run(config, options, ["stats"]).ran == ["stats"]
    changed = json.loads(path.read_text())
    assert changed["experiments"]["vanilla_cnn"]["all"]["accuracy"]["value"] == pytest.approx(1 / 6)
    assert first["experiments"]["vanilla_cnn"]["all"]["accuracy"]["value"] == pytest.approx(0)
    assert pipeline.run(config, options, ["stats"]).ran == []


def test_damaged_result_files_mark_their_row_and_fail_the_command(project, tmp_path):  # noqa: F811
    p = copy_project(project, tmp_path)
    (p["runs"] / "alexnet_frozen" / "predictions.csv").write_text("file,true_class,predicted_class\nx,n7,n0\n")
    (p["runs"] / "resnet34_frozen" / "metrics.json").write_text('{"accuracy": 0.9, ')
    result = runner.invoke(app, ["render", "--config", str(p["config"]), "--format", "html"])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2
    assert any("resnet34_frozen/metrics.json: not valid JSON" in e for e in errors)
    assert any("alexnet_frozen/predictions.csv: malformed row" in e for e in errors)
    html = (p["report"] / "report.html").read_text()  # the report is still written
    assert re.search(r"<td>ResNet34</td><td>Sí</td><td class=\"num\">ilegible</td>", html)
    assert "Resultados ilegibles: ResNet34 (congelado)" in html
    statistics = json.loads((p["report"] / "stats" / "stats.json").read_text())
    assert "alexnet_frozen" not in statistics["experiments"] and "resnet34_frozen" not in statistics["experiments"]
    assert len(statistics["experiments"]) == 5


def test_eda_reports_the_copies_inside_the_validation_split(tmp_path):
    import shutil

    from conftest import make_dataset
    from monkeyreport.eda import run_eda
    from test_eda import config_for

    root = make_dataset(tmp_path / "d")
    val = root / "validation" / "validation"
    shutil.copy(val / "n1" / "n1v000.jpg", val / "n1" / "n1v_copy.jpg")  # a copy inside validation
    shutil.copy(root / "training" / "training" / "n0" / "n0t000.jpg", val / "n0" / "leak.jpg")  # one across
    eda = run_eda(config_for(root, tmp_path / "r"), show_progress=False)
    dup = eda.duplicates
    assert (dup["n_groups"], dup["n_validation_copy_groups"], dup["n_validation_repeats"]) == (2, 1, 1)
    assert dup["hash_bits"] == 64 and dup["near_distance"] >= 0
    assert eda.validation_copies == [["validation/validation/n1/n1v000.jpg", "validation/validation/n1/n1v_copy.jpg"]]
    assert eda.leaked_validation_files == {"validation/validation/n0/leak.jpg"}
