"""A study: several seeds and per-experiment recipes, results over seeds, Holm's correction."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from monkeyreport import pipeline
from monkeyreport.config import ConfigError, TrainingConfig, load_config, stable_hash
from monkeyreport.results import RESULTS_SCHEMA, RunMetrics
from monkeyreport.run_state import experiment_hash
from monkeyreport.spanish_format import decimal
from monkeyreport.stats import holm

from conftest import REPO, make_dataset

STUDY = """
seed = 42
seeds = [1, 2]
[data]
root = "{data}"
[output]
report_dir = "{root}/report"
runs_dir = "{root}/runs"
[eda]
samples_per_class = 1
workers = 1
[training]
epochs = 2
batch_size = 4
resize = 36
crop = 32
num_workers = 0
[trainer]
accelerator = "cpu"
devices = 1
precision = "32-true"
[[experiments]]
name = "scratch"
title = "VanillaCNN"
architecture = "vanilla_cnn"
[[experiments]]
name = "scratch_slow"
title = "VanillaCNN lenta"
architecture = "vanilla_cnn"
learning_rate = 0.0001
"""


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def test_a_two_seed_two_experiment_study_builds_and_reports_means_over_seeds(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "monkeys", per_class=(6, 3))
    config = load_config(write_config(tmp_path, STUDY.format(data=data, root=tmp_path)))
    monkeypatch.chdir(tmp_path)
    outcome = pipeline.run(config, pipeline.Options(show_progress=False, echo=lambda _: None))
    assert not outcome.failed and not outcome.problems, outcome.lines

    metrics = {run.name: RunMetrics.read(tmp_path / "runs" / run.name / "metrics.json") for run in config.runs}
    assert sorted(metrics) == ["scratch-seed1", "scratch-seed2", "scratch_slow-seed1", "scratch_slow-seed2"]
    assert {name: m.seed for name, m in metrics.items()} == {
        "scratch-seed1": 1, "scratch-seed2": 2, "scratch_slow-seed1": 1, "scratch_slow-seed2": 2}
    assert metrics["scratch_slow-seed1"].learning_rate == 0.0001 and metrics["scratch-seed1"].learning_rate == 0.001

    stats = json.loads((tmp_path / "report" / "stats" / "stats.json").read_text())
    html = (tmp_path / "report" / "report.html").read_text()
    for experiment in ("scratch", "scratch_slow"):
        values = [metrics[f"{experiment}-seed{s}"].accuracy for s in (1, 2)]
        group = stats["groups"][experiment]
        assert group["accuracy"]["mean"] == pytest.approx(np.mean(values))
        assert group["accuracy"]["sd"] == pytest.approx(np.std(values, ddof=1))
        f1 = [metrics[f"{experiment}-seed{s}"].macro_f1 for s in (1, 2)]
        for metric in (values, f1):  # Tabla 1: the mean, its SD below it
            assert f'{decimal(np.mean(metric), 4)}<br><span class="ci">± {decimal(np.std(metric, ddof=1), 4)}</span>' in html

    (comparison,) = stats["comparisons"]
    assert comparison["test"] == "paired_t" and comparison["seeds"] == [1, 2]
    assert [t["seed"] for t in comparison["mcnemar"]] == [1, 2]
    assert comparison["p_holm"] == pytest.approx(min(1.0, comparison["p_value"]))  # a family of one
    assert "Cada experimento se entrena con dos semillas (1 y 2)" in re.sub(r"\s+", " ", html)
    assert re.search(r"VanillaCNN lenta</td><td>tasa de aprendizaje 0,0001</td>", html)
    assert (tmp_path / "report" / "figures" / "seeds.png").is_file()
    assert "valor de cada semilla" in html
    assert pipeline.run(config, pipeline.Options(show_progress=False, echo=lambda _: None)).ran == []


def test_holm_adjusts_a_family_step_down():
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([0.6, 0.6]) == [1.0, 1.0]
    assert holm([]) == []


def test_the_original_recipe_keeps_its_runs_and_identities():
    """The identity of the default config's runs is what it was before recipes existed."""
    config = load_config(REPO / "configs" / "monkeyreport.toml")
    assert [run.name for run in config.runs] == [e.name for e in config.experiments]
    for experiment in config.experiments:
        t = config.training
        before = stable_hash(RESULTS_SCHEMA, experiment.identity, config.seed, t.epochs, t.batch_size,
                             t.learning_rate, t.resize, t.crop, t.max_images_per_class,
                             config.trainer.precision, config.trainer.memory_format)
        assert experiment_hash(config.for_run(config.runs[0]), experiment) == before
    assert config.training.recipe_changes() == {}


def test_a_recipe_key_in_an_experiment_wins_there_and_changes_only_its_identity(tmp_path):
    text = STUDY.format(data=tmp_path, root=tmp_path).replace('seeds = [1, 2]\n', "")
    config = load_config(write_config(tmp_path, text))
    plain, slow = config.runs
    assert config.for_run(slow).training.learning_rate == 0.0001
    assert config.for_run(plain).training.learning_rate == 0.001
    assert plain.name == "scratch" and slow.name == "scratch_slow"
    tuned = text.replace("learning_rate = 0.0001", 'optimizer = "adamw"\nscheduler = "cosine"')
    retuned = load_config(write_config(tmp_path, tuned))
    assert retuned.for_run(retuned.runs[1]).training.recipe_changes() == {"optimizer": "adamw", "scheduler": "cosine"}
    assert experiment_hash(retuned.for_run(retuned.runs[0]), retuned.runs[0].experiment) == \
        experiment_hash(config.for_run(plain), plain.experiment)


@pytest.mark.parametrize("entry,message", [
    ('scheduler = "linear"', "'training.scheduler' must be one of none, cosine, step"),
    ("learning_rate = -1.0", "'training.learning_rate' must be positive"),
    ("warmup_epochs = 5", "'training.warmup_epochs' must be >= 0 and < epochs"),
    ("colour = 1", "unknown key 'experiments[1].colour'"),
    ("epochs = 'two'", "'experiments[1].epochs' must be an integer"),
])
def test_a_bad_recipe_key_is_one_line_naming_it(tmp_path, entry, message):
    text = STUDY.format(data=tmp_path, root=tmp_path).replace("learning_rate = 0.0001", entry)
    with pytest.raises(ConfigError) as error:
        load_config(write_config(tmp_path, text))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_seeds_must_not_repeat(tmp_path):
    text = STUDY.format(data=tmp_path, root=tmp_path).replace("seeds = [1, 2]", "seeds = [1, 1]")
    with pytest.raises(ConfigError, match="'seeds' must not repeat a seed"):
        load_config(write_config(tmp_path, text))


def test_default_recipe_changes_nothing():
    assert TrainingConfig().recipe_changes() == {}


def test_conclusions_over_seeds_use_the_corrected_paired_test_and_count_the_seeds():
    from monkeyreport.findings import findings
    from monkeyreport.render import environment

    def row(name, frozen, values, label="Lite0", recipe=None):
        acc = float(np.mean(values))
        spread = {"mean": acc, "sd": float(np.std(values, ddof=1)), "n": 3, "values": values}
        group = {"seeds": [42, 43, 44], "accuracy": spread, "macro_f1": spread}
        return {"name": name, "label": label, "architecture": "efficientnet_lite0", "frozen": frozen,
                "status": "ok", "transfer": True, "accuracy": acc, "macro_f1": acc, "best": False, "run": None,
                "stats": None, "group": group, "recipe": recipe or {}, "reason": "", "history": [], "on_features": False}

    def comparison(a, b, p_holm):
        return {"a": a, "b": b, "test": "paired_t", "seeds": [42, 43, 44], "p_value": p_holm / 2,
                "p_holm": p_holm, "significant": p_holm < 0.05}

    rows = [row("frozen", True, [0.94, 0.95, 0.96]), row("tuned", False, [0.89, 0.90, 0.91]),
            row("tuned2", False, [0.93, 0.96, 0.93], "Lite0 ajustada", {"learning_rate": 0.0001})]
    rows[0]["best"] = True
    macro = environment(REPO / "templates").get_template("macros.html.j2").module.finding

    def text(tests):
        return " ".join(re.sub(r"\s+", " ", str(macro(f, 10))) for f in findings(rows, tests, 10, 0))

    significant = text([comparison("frozen", "tuned", 0.01), comparison("frozen", "tuned2", 0.30)])
    assert "exactitud media de 0,9500 y un F1 macro medio de 0,9500 sobre tres semillas" in significant
    assert "Según la prueba t pareada sobre tres semillas, con la corrección de Holm" in significant
    assert "con la receta base y tres semillas, el modelo con la red troncal congelada obtuvo un resultado" in significant
    assert ("Entre Lite0 (congelado) y Lite0 ajustada (ajuste fino), cada uno con su receta" in significant
            and "la diferencia entre el modelo con la red troncal congelada" in significant)
    assert ("de 0,9500 ± 0,0100 en la variante congelada frente a 0,9400 ± 0,0173 en la de ajuste fino, sobre tres "
            "semillas; p corregido = 0,300") in significant
    assert ("Con la receta base, la red troncal congelada de Lite0 supera al ajuste fino en 5,0 puntos porcentuales de "
            "exactitud; con Lite0 ajustada (ajuste fino) la diferencia baja a 1,0 puntos: la receta la reduce sin "
            "cerrarla, y la red troncal congelada sigue por delante en dos de las tres semillas") in significant
    tied = text([comparison("frozen", "tuned", 0.06), comparison("frozen", "tuned2", 0.30)])
    assert "significativamente mejor" not in tied and "superó de forma significativa" not in tied


def test_a_confusion_shared_by_variants_of_one_architecture_is_not_a_shared_difficulty():
    from monkeyreport.context import per_class_view

    def row(name, architecture, best=False):
        stats = {"per_class": [], "most_confused": [{"pair": ["n0", "n9"], "errors": 4, "a_as_b": 2, "b_as_a": 2}]}
        return {"name": name, "architecture": architecture, "best": best, "stats": stats}

    classes = [{"code": "n0", "latin": "Alouatta palliata"}, {"code": "n9", "latin": "Trachypithecus johnii"}]
    variants = per_class_view([row("frozen", "efficientnet_lite0", True), row("tuned", "efficientnet_lite0")], classes)
    assert variants["shared"] == [] and [len(s["rows"]) for s in variants["repeated"]] == [2]
    two_architectures = per_class_view([row("frozen", "efficientnet_lite0", True), row("scratch", "vanilla_cnn")],
                                       classes)
    assert [len(s["rows"]) for s in two_architectures["shared"]] == [2] and two_architectures["repeated"] == []
