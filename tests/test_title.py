"""The title page: author, course and date from [report], the Resumen with the main result and
its uncertainty; and Apéndice B's comparison with the original report's ranking."""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from monkeyreport.cli import app
from monkeyreport.config import load_config
from monkeyreport.context import original_view
from monkeyreport.errors import ConfigError
from monkeyreport.spanish_format import decimal, long_date

from conftest import make_dataset
from test_render import fake_results, runner, write_config


@pytest.mark.parametrize("text, message", [
    ('[report]\ndate = "12/05/2025"\n', "'report.date' must be a date such as 2025-05-12"),
    ("[report]\nauthor = 3\n", "'report.author' must be a string"),
    ('[report]\nautor = "x"\n', "unknown key 'report.autor'"),
])
def test_report_fields_are_validated_with_one_line_naming_the_key(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value) and str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_report_fields_are_empty_by_default_and_take_a_string_or_toml_date(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("")
    default = load_config(path).report
    assert (default.author, default.course, default.day) == ("", "", None)
    for value in ('"2025-05-12"', "2025-05-12"):
        path.write_text(f'[report]\nauthor = "A. Autora"\ndate = {value}\n')
        assert load_config(path).report.day == datetime.date(2025, 5, 12)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, Path]:
    """The fake smoke project (test_render) rendered to HTML twice: without and with [report]."""
    tmp = tmp_path_factory.mktemp("title")
    config = write_config(tmp, tmp / "report", tmp / "runs")
    fake_results(config, make_dataset(tmp / "data"))
    plain = runner.invoke(app, ["render", "--config", str(config), "--format", "html"])
    assert plain.exit_code == 0, plain.output
    html = {"plain": (tmp / "report" / "report.html").read_text()}
    config.write_text(config.read_text() + '\n[report]\nauthor = "Ana Pérez"\ncourse = "Aprendizaje Profundo"\n'
                                           'date = 2025-05-12\n')
    named = runner.invoke(app, ["render", "--config", str(config), "--format", "html"])
    assert named.exit_code == 0, named.output
    html["named"] = (tmp / "report" / "report.html").read_text()
    html["stats"] = json.loads((tmp / "report" / "stats" / "stats.json").read_text())
    return html


def header(html: str) -> str:
    return html[html.index('<header class="title-block">'):html.index("</header>")]


def test_author_course_and_date_shown_only_when_configured(rendered):
    plain, named = header(rendered["plain"]), header(rendered["named"])
    assert 'class="byline' not in plain and long_date(datetime.date.today()) in plain
    assert "Ana Pérez" in named and "Aprendizaje Profundo" in named and "12 de mayo de 2025" in named


def test_resumen_gives_the_best_result_with_its_interval(rendered):
    text = " ".join(re.sub(r"<[^>]+>", " ", header(rendered["plain"])).split())
    assert "Resumen" in text
    stats = rendered["stats"]
    best = stats["experiments"][stats["best"]]["all"]  # one seed: the bootstrap interval
    accuracy = best["accuracy"]
    assert re.search(rf"exactitud( \(accuracy\))? {re.escape(decimal(accuracy['value'], 4))}", text), text
    assert f"{decimal(accuracy['low'], 3)}–{decimal(accuracy['high'], 3)}" in text
    assert "EfficientNetB0 (ajuste fino)" in text and "siete experimentos" in text


def test_appendix_reads_where_the_ranking_differs_from_the_original(rendered):
    html = rendered["plain"]
    appendix = " ".join(re.sub(r"<[^>]+>", " ", html[html.index("Apéndice B. Comparación"):]).split())
    assert "Dónde difiere el orden" in appendix and "Cambian de puesto" in appendix
    assert "el orden se invierte" in appendix  # ResNet34: frozen ahead in the original, not in the fake results


def row(name, arch, frozen, accuracy, recipe=None, pretrained="imagenet", mean=(0.485, 0.456, 0.406), precision="32-true"):
    normalisation = "imagenet" if mean[0] == 0.485 else "half"
    run = SimpleNamespace(learning_rate=0.001, batch_size=32, recipe=recipe or {}, pretrained=pretrained,
                          compute={"precision": precision}, selected_epoch=5, epochs=5, n_train=1098,
                          preprocessing=SimpleNamespace(resize=256, crop=224, normalisation=normalisation))
    return {"name": name, "label": name, "architecture": arch, "frozen": frozen, "transfer": arch != "vanilla_cnn",
            "status": "ok", "recipe": {"learning_rate": 3e-4} if recipe else {}, "accuracy": accuracy,
            "macro_f1": accuracy, "run": run}


def test_original_view_ranks_comparable_rows_and_finds_reversed_variants():
    rows = [row("v", "vanilla_cnn", False, 0.5), row("af", "alexnet", True, 0.9), row("at", "alexnet", False, 0.2),
            row("lf", "efficientnet_lite0", True, 0.98, pretrained="packaged", mean=(0.5,) * 3),
            row("lt", "efficientnet_lite0", False, 0.93, pretrained="packaged", mean=(0.5,) * 3,
                precision="bf16-mixed"),
            row("lr", "efficientnet_lite0", False, 0.95, recipe={"optimizer": "adamw"}, pretrained="packaged")]
    tests = [{"a": "lf", "b": "lt", "significant": False}, {"a": "af", "b": "at", "significant": True}]
    view = original_view(rows, tests)
    counterparts = view["counterparts"]
    assert counterparts[5] is None  # a recipe of its own: the original has no such experiment
    assert counterparts[3]["architecture"] == "efficientnet_b0" and counterparts[3]["substitute"]
    assert not counterparts[1]["substitute"] and view["results"][1] == (0.9412, 0.9418)
    assert [o["row"]["name"] for o in view["order"]] == ["lf", "lt", "af", "v", "at"]
    assert [o["row"]["name"] for o in view["original_order"]] == ["lt", "lf", "af", "v", "at"]  # B0 tuned won there
    assert [(o["row"]["name"], o["rank"], o["original_rank"]) for o in view["moved"]] == [("lf", 1, 2), ("lt", 2, 1)]
    alexnet, lite0 = view["variants"]
    assert not alexnet["reversed"] and alexnet["significant"]
    assert lite0["reversed"] and not lite0["significant"] and lite0["substitute"]
    assert lite0["gap"] == pytest.approx(0.05) and lite0["original_gap"] == pytest.approx(0.9485 - 0.9816)
    differences = view["differences"]
    assert [r["name"] for r in differences["weights"]] == ["lf", "lt"]
    assert [r["name"] for r in differences["normalisation"]] == ["lf", "lt"]
    assert [r["name"] for r in differences["precision"]] == ["lt"] and differences["precisions"] == ["bf16-mixed"]
    assert differences["recipe"] == [] and view["substitutes"] == [rows[3], rows[4]]
