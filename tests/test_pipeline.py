"""The pipeline: one freshness rule for every stage, `monkeyreport status`, the stage table.

One tiny project is built once (every stage runs for real); each case then changes one input
of one stage and checks which stages a build would run: that stage and everything below it,
and nothing else. A few cases also run the build to check that what runs is what was planned.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

from monkeyreport import pipeline
from monkeyreport.cli import app
from monkeyreport.config import load_config
from monkeyreport.errors import MonkeyReportError
from monkeyreport.pipeline import STAGE_NAMES, Options
from monkeyreport.results import ReportFiles, RunFiles

from conftest import REPO, make_dataset, noise_image

CONFIG = """
seed = 42
[data]
root = "monkeys"
[output]
report_dir = "report"
runs_dir = "runs"
[eda]
samples_per_class = 1
workers = 1
[training]
epochs = 1
batch_size = 4
resize = 36
crop = 32
num_workers = 0
[trainer]
accelerator = "cpu"
devices = 1
precision = "32-true"
[[experiments]]
name = "vanilla_cnn"
architecture = "vanilla_cnn"
[[experiments]]
name = "effnet_frozen"
title = "EfficientNetB0"
architecture = "efficientnet_b0"
frozen = true
"""
EXPERIMENT = "effnet_frozen"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A project folder built once by every stage: dataset, config, templates, runs, report."""
    root = tmp_path_factory.mktemp("pipeline")
    make_dataset(root / "monkeys")
    (root / "monkeyreport.toml").write_text(CONFIG)
    shutil.copytree(REPO / "templates", root / "templates", ignore=shutil.ignore_patterns("__pycache__"))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        outcome = pipeline.run(load_config(Path("monkeyreport.toml")), quiet())
    finally:
        os.chdir(cwd)
    assert outcome.ran == list(STAGE_NAMES) and not outcome.failed and not outcome.problems
    return root


@pytest.fixture
def project(built: Path, tmp_path: Path, monkeypatch) -> Path:
    """A copy of the built project (times kept) as the working folder."""
    root = tmp_path / "project"
    shutil.copytree(built, root, symlinks=True)
    monkeypatch.chdir(root)
    return root


def quiet(**kwargs) -> Options:
    return Options(show_progress=False, echo=lambda _: None, **kwargs)


def config():
    return load_config(Path("monkeyreport.toml"))


def stale(cfg=None) -> set[str]:
    return {s.name for s in pipeline.plan(cfg or config(), quiet()) if not s.fresh}


def edit(path: str, text: str = "\n") -> Callable[[], None]:
    def change() -> None:
        with Path(path).open("a", encoding="utf-8") as f:
            f.write(text)
    return change


def config_change(old: str, new: str) -> Callable[[], None]:
    def change() -> None:
        path = Path("monkeyreport.toml")
        assert old in path.read_text()
        path.write_text(path.read_text().replace(old, new))
    return change


def replace_checkpoint() -> None:
    checkpoint = RunFiles.of(Path("runs"), EXPERIMENT).checkpoint
    data = checkpoint.read_bytes()
    checkpoint.unlink()
    checkpoint.write_bytes(data)  # the same bytes, a new file: compared by size and time
    st = checkpoint.stat()
    os.utime(checkpoint, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def add_image() -> None:
    noise_image(999).save(next(Path("monkeys").glob("training/training/n0")) / "extra.jpg")


TRAIN_DOWN = {"train", "interpret", "stats", "figures", "render"}
EDA_DOWN = {"eda", "interpret", "stats", "figures", "render"}
RUN = f"runs/{EXPERIMENT}"

# (what changes, how, the stages that must run), grouped by the kind of input.
CASES: list[tuple[str, Callable[[], None], set[str]]] = [
    # templates
    ("a section template", edit("templates/sections/01_introduccion.html.j2", "<p>x</p>\n"), {"render"}),
    ("the stylesheet", edit("templates/report.css", "p {}\n"), {"render"}),
    # the species table and the figure words: every stage that draws (eda's data figures too)
    ("the species table", edit("templates/species.toml", "# x\n"), EDA_DOWN),
    ("the figure words", edit("templates/figures.toml", "# x\n"), EDA_DOWN),
    # config sections
    ("config [eda]", config_change("samples_per_class = 1", "samples_per_class = 2"), {"eda", "render"} | EDA_DOWN),
    ("config [training]", config_change("epochs = 1", "epochs = 2"), TRAIN_DOWN),
    ("config [trainer]", config_change('precision = "32-true"', 'precision = "auto"'), TRAIN_DOWN),
    ("config seed", config_change("seed = 42", "seed = 7"), EDA_DOWN | TRAIN_DOWN),
    ("config [experiments]", config_change('title = "EfficientNetB0"', 'title = "B0"'),
     {"train", "interpret", "stats", "figures", "render"}),
    ("config file text only", edit("monkeyreport.toml", "# a comment\n"), {"render"}),
    # inputs that are not files of this project
    ("the dataset", add_image, EDA_DOWN | TRAIN_DOWN),
    # result files and upstream outputs
    ("metrics.json", edit(f"{RUN}/metrics.json", " "), TRAIN_DOWN),
    ("predictions.csv", edit(f"{RUN}/predictions.csv", "\n"), TRAIN_DOWN),
    ("history.csv", edit(f"{RUN}/history.csv", "\n"), TRAIN_DOWN),
    ("a checkpoint replaced", replace_checkpoint, TRAIN_DOWN),
    ("run.json", edit(f"{RUN}/run.json", " "), {"interpret", "render"}),
    ("eda.json", edit("report/eda/eda.json", " "), EDA_DOWN),
    ("a data figure", edit("report/figures/sample_grid.jpg", " "), EDA_DOWN),
    ("a model summary", edit("report/models/vanilla_cnn.json", " "), {"summaries", "figures", "render"}),
    ("interpret.json", edit("report/interpret/interpret.json", " "), {"interpret", "render"}),
    ("stats.json", edit("report/stats/stats.json", " "), {"stats", "figures", "render"}),
    ("figures.json", edit("report/figures/figures.json", " "), {"figures", "render"}),
    ("a report figure", edit("report/figures/cnn_schematic.png", " "), {"figures", "render"}),
    ("report.pdf", edit("report/report.pdf", " "), {"render"}),
    ("a stamp removed", lambda: ReportFiles(Path("report")).stamp("summaries").unlink(),
     {"summaries", "figures", "render"}),
]


def test_an_unchanged_build_does_nothing(project):
    assert stale() == set()
    outcome = pipeline.run(config(), quiet())
    assert outcome.ran == []
    assert outcome.lines == [f"{name} unchanged, skipped" for name in STAGE_NAMES]


@pytest.mark.parametrize("label,change,expected", CASES, ids=[c[0] for c in CASES])
def test_a_changed_input_reruns_its_stage_and_everything_below(project, label, change, expected):
    change()
    assert stale() == expected


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_a_new_schema_version_reruns_the_stage_and_everything_below(project, monkeypatch, name):
    stages = tuple(dataclasses.replace(s, version=s.version + 1) if s.name == name else s
                   for s in pipeline.STAGES)
    monkeypatch.setattr(pipeline, "STAGES", stages)
    assert stale() == set(pipeline.downstream(name))


@pytest.mark.parametrize("module,expected", [
    ("stats.py", {"stats", "figures", "render"}),  # the reliability diagram reads stats.json
    ("render.py", {"render"}),
    ("figures.py", EDA_DOWN),  # the data figures too
    ("summaries.py", {"summaries", "figures", "render"}),
    ("selection.py", {"interpret", "stats", "figures", "render"}),
    ("training.py", set()),  # training is versioned by RESULTS_SCHEMA, not by its code
])
def test_changed_code_reruns_the_stages_that_run_it(project, monkeypatch, module, expected):
    real = pipeline.code_digest
    monkeypatch.setattr(pipeline, "code_digest", lambda m: "edited" if m == module else real(m))
    assert stale() == expected


def test_what_runs_is_what_was_planned(project, monkeypatch):
    edit("templates/sections/01_introduccion.html.j2", "<p>Marcador editado.</p>\n")()
    outcome = pipeline.run(config(), quiet())
    assert outcome.ran == ["render"] and "Marcador editado." in Path("report/report.html").read_text()
    real = pipeline.code_digest
    monkeypatch.setattr(pipeline, "code_digest", lambda m: "edited" if m == "stats.py" else real(m))
    assert pipeline.run(config(), quiet()).ran == ["stats", "figures", "render"]
    assert pipeline.run(config(), quiet()).ran == []


def test_interpretation_change_reaches_the_report(project, monkeypatch):
    """The measured bug: a rerun of the interpretation used to leave the report as it was."""
    real = pipeline.code_digest
    monkeypatch.setattr(pipeline, "code_digest", lambda m: "edited" if m == "interpret.py" else real(m))
    assert pipeline.run(config(), quiet()).ran == ["interpret", "render"]


def test_an_incomplete_stage_runs_again(project, monkeypatch):
    stamp = pipeline.Stamp.read(config(), "train")
    dataclasses.replace(stamp, complete=False, reason="failed: effnet_frozen").write(config())
    states = {s.name: s for s in pipeline.plan(config(), quiet())}
    assert states["train"].reasons[0] == "last run incomplete: failed: effnet_frozen"
    assert stale() == TRAIN_DOWN


def run_status(*args: str):
    return CliRunner().invoke(app, ["status", *args], terminal_width=200)


def test_status_after_a_build_says_everything_is_fresh(project):
    result = run_status()
    assert result.exit_code == 0, result.output
    assert "everything fresh" in result.output
    assert all(f"{name:<10} fresh" in result.output for name in STAGE_NAMES)
    assert f"run {EXPERIMENT}: finished" in result.output


def test_status_names_the_edited_template(project):
    edit("templates/sections/01_introduccion.html.j2", "<p>x</p>\n")()
    result = run_status()
    assert result.exit_code == 1
    assert "render     stale: template sections/01_introduccion.html.j2 changed" in result.output
    assert "a build would run: render" in result.output


def test_status_names_the_replaced_checkpoint(project):
    replace_checkpoint()
    result = run_status()
    assert result.exit_code == 1
    checkpoint = RunFiles.of(Path("runs"), EXPERIMENT).checkpoint
    assert f"interpret  stale: {checkpoint} changed" in result.output
    assert f"train      stale: output {checkpoint} changed" in result.output


def test_status_names_the_config_section_and_the_runs_to_retrain(project):
    config_change("epochs = 1", "epochs = 2")()
    result = run_status("--json")
    assert result.exit_code == 1
    import json

    data = json.loads(result.output)
    stages = {s["name"]: s for s in data["stages"]}
    assert data["stale"] and stages["train"]["reasons"] == ["config [training] changed"]
    assert stages["eda"]["fresh"] and stages["summaries"]["fresh"]
    assert {r["experiment"]: r["state"] for r in data["runs"]} == {"vanilla_cnn": "stale", EXPERIMENT: "stale"}
    assert data["runs"][0]["reasons"][0] == "its settings changed"


def test_status_of_a_bad_config_is_an_error(project):
    Path("monkeyreport.toml").write_text("[training]\nepochs = 'x'\n")
    result = run_status()
    assert result.exit_code == 2 and "error:" in result.output


def test_the_docs_page_is_the_stage_table():
    page = (REPO / "docs" / "pipeline.md").read_text()
    assert pipeline.stage_table() in page


def test_every_stage_runs_after_stages_declared_before_it():
    seen: set[str] = set()
    for s in pipeline.STAGES:
        assert set(s.after) <= seen, s.name
        seen.add(s.name)


def figure_numbers(html: str) -> list[tuple[int, str]]:
    """(number, image file) of every figure with an image, in document order."""
    import re

    return [(int(n), src) for n, src in
            re.findall(r'<figure class="figure[^"]*" id="figura-(\d+)">\s*<img src="([^"]+)"', html)]


def test_figures_are_numbered_in_the_order_the_templates_place_them(project):
    main = Path("templates/report.html.j2")
    eda_section = '{% include "sections/05_analisis_exploratorio.html.j2" %}\n'
    text = main.read_text().replace(eda_section, "")
    main.write_text(text.replace('{% include "sections/02_redes', eda_section + '{% include "sections/02_redes'))
    assert pipeline.run(config(), quiet()).ran == ["render"]
    html = Path("report/report.html").read_text()
    placed = figure_numbers(html)
    assert [n for n, _ in placed] == list(range(1, len(placed) + 1))
    number = {src.rsplit("/", 1)[-1]: n for n, src in placed}
    assert number["class_distribution.png"] == 1 and number["cnn_schematic.png"] > number["sample_grid.jpg"]
    assert f"Una CNN típica (Figura {number['cnn_schematic.png']})" in html
    assert f"(Figura {number['class_distribution.png']})" in html


def test_a_reference_to_a_figure_not_shown_is_a_template_error(project):
    section = Path("templates/sections/01_introduccion.html.j2")
    section.write_text(section.read_text() + "<p>Véase la Figura {{ figures.curves.number }}.</p>\n")
    main = Path("templates/report.html.j2")
    main.write_text(main.read_text().replace('{% include "sections/06_modelamiento.html.j2" %}\n', ""))
    with pytest.raises(MonkeyReportError, match="reference to figure 'curves'"):
        pipeline.run(config(), quiet())
