"""The interpretation stage: top-loss galleries, Grad-CAM, leakage pairs, skip/redo, failures."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from monkeyreport import interpret, pipeline
from monkeyreport.config import load_config
from monkeyreport.eda import run_eda
from monkeyreport.interpret import figure_problems, grad_cam_maps, run_interpretation, top_losses
from monkeyreport.models import create
from monkeyreport.results import Predictions, ReportFiles, RunFiles
from monkeyreport.training import train_all

from conftest import make_dataset
from test_training import write_config

EXPERIMENTS = [
    {"name": "vanilla", "architecture": "vanilla_cnn", "pretrained": "none"},
    {"name": "lite0_frozen", "architecture": "efficientnet_lite0", "frozen": True, "pretrained": "none"},
    {"name": "lite0_tuned", "architecture": "efficientnet_lite0", "pretrained": "none"},
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny dataset with one validation image copied from training, its EDA and three
    finished runs (the frozen one trained on cached features: its checkpoint is the head)."""
    root = tmp_path_factory.mktemp("interp")
    data = make_dataset(root / "d", per_class=(6, 4))
    shutil.copy(data / "training/training/n1/n1t000.jpg", data / "validation/validation/n1/n1v_copy.jpg")
    cfg = load_config(write_config(root, EXPERIMENTS, data, resize=72, crop=64))
    run_eda(cfg, show_progress=False)
    train_all(cfg, show_progress=False)
    for e in EXPERIMENTS:
        assert RunFiles.of(cfg.runs_dir, e["name"]).metrics.is_file(), e["name"]
    data = run_interpretation(cfg)  # drawn for real once; tests that run it again stub drawing
    assert not figure_problems(data), figure_problems(data)
    return cfg


@pytest.fixture
def fast_figures(monkeypatch):
    """Drawing stubbed out (a few bytes per figure): the stage's logic without matplotlib's time."""
    from monkeyreport import figures

    def stub(*args, **kwargs):
        next(a for a in reversed(args) if isinstance(a, Path)).write_bytes(b"stub")

    for name in ("top_losses_gallery", "grad_cam_grid", "leakage_pairs"):
        monkeypatch.setattr(figures, name, stub)


@pytest.fixture
def project(trained, tmp_path):
    """A private copy of the trained project (runs, report), so tests may damage it. The
    stages ran outside the pipeline: no stamps, so each stage reads as never run."""
    cfg = trained
    runs, report = tmp_path / "runs", tmp_path / "report"
    shutil.copytree(cfg.runs_dir, runs)
    shutil.copytree(cfg.report_dir, report)
    import dataclasses

    return dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, runs_dir=str(runs),
                                                                report_dir=str(report)))


def read_interpretation(cfg) -> dict:
    return json.loads(ReportFiles(cfg.report_dir).interpretation.read_text())


def interpret_stage(cfg, force: bool = False) -> tuple[bool, str]:
    """The interpret stage as `build` runs it: whether it ran, and its result line."""
    lines: list[str] = []
    outcome = pipeline.run(cfg, pipeline.Options(force=force, show_progress=False, echo=lines.append),
                           ["interpret"])
    assert outcome.lines == lines and len(lines) == 1, lines
    return outcome.ran == ["interpret"], lines[0]


def test_top_losses_are_the_highest_loss_rows_of_predictions(project):
    assert not ReportFiles(project.report_dir).stamp("interpret").exists()
    data = read_interpretation(project)  # as the fixture drew it
    galleries = {g["experiment"]: g for g in data["galleries"]}
    assert "vanilla" in galleries  # the baseline always has its gallery
    for name, g in galleries.items():
        assert (project.report_dir / g["file"]).is_file() and g["file"].endswith(".jpg")
        p = Predictions.read(RunFiles.of(project.runs_dir, name).predictions)
        loss = -np.log(p.probabilities[np.arange(len(p.files)), p.true])
        expected = [p.files[i] for i in np.argsort(-loss, kind="stable")[:len(g["items"])]]
        assert [i["file"] for i in g["items"]] == expected
        assert len(g["items"]) >= 8
        for item in g["items"]:
            row = p.files.index(item["file"])
            assert item["loss"] == pytest.approx(loss[row], rel=1e-6)
            assert item["predicted"] == p.classes[p.predicted[row]]
            assert item["probability"] == pytest.approx(p.probabilities[row, p.predicted[row]])
            assert item["leaked"] == (item["file"] == "validation/validation/n1/n1v_copy.jpg")


def test_top_losses_orders_by_minus_log_probability_of_the_true_class():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    p = Predictions(["a", "b", "c", "d"], ["x", "y"], np.array([0, 0, 1, 1]), probs.argmax(1), probs)
    rows = top_losses(p, n=3)
    assert [r["file"] for r in rows] == ["b", "c", "d"]
    assert rows[0]["loss"] == pytest.approx(-np.log(0.2)) and rows[0]["predicted"] == "y"
    assert rows[0]["probability"] == pytest.approx(0.8)


def test_grad_cam_has_the_image_shape_and_is_not_constant():
    torch.manual_seed(0)
    model = create("vanilla_cnn", 3).model.eval()
    image = torch.rand(1, 3, 64, 48)
    maps, size = grad_cam_maps(model, "vanilla_cnn", image, [1])
    assert maps.shape == (1, 64, 48) and size == (16, 12)  # the layer's own grid, before resizing
    assert np.isfinite(maps).all() and maps.std() > 0 and maps.min() >= 0 and maps.max() <= 1


def test_grad_cam_compares_frozen_and_finetuned_and_leakage_pairs_are_drawn(project):
    data = read_interpretation(project)
    cam = data["gradcam"]
    assert cam["architecture"] == "efficientnet_lite0" and cam["target_layer"] == "conv_head"
    assert [p["experiment"] for p in cam["panels"]] == ["lite0_frozen", "lite0_tuned"]
    assert all(p["random_weights"] and not p["error"] for p in cam["panels"])
    assert [i["class"] for i in cam["images"]] == ["n0", "n1", "n2"]
    assert "n1v_copy" not in " ".join(i["file"] for i in cam["images"])  # never a leaked image
    recorded = [Predictions.read(RunFiles.of(project.runs_dir, p["experiment"]).predictions) for p in cam["panels"]]
    for image in cam["images"]:  # how many of the compared models' predictions.csv miss it
        assert image["wrong"] == sum(p.classes[p.predicted[p.files.index(image["file"])]] != image["class"]
                                     for p in recorded)
    assert cam["input_size"] == [64, 64] and cam["map_size"] == [2, 2]  # conv_head: stride 32
    assert cam["reference"] == "lite0_frozen"
    frozen, tuned = cam["panels"]
    assert frozen["agreement"] == [] and len(tuned["agreement"]) == 3
    for panel in cam["panels"]:
        rows = panel["predictions"]
        assert [r["correct"] for r in rows] == [r["predicted"] == i["class"] for r, i in zip(rows, cam["images"])]
        assert all(r["concentration"] is None or 0.1 - 1e-6 <= r["concentration"] <= 1 for r in rows)
        assert panel["summary"]["n_correct"] == sum(r["correct"] for r in rows)
        assert panel["summary"]["n_empty"] == sum(r["concentration"] is None for r in rows)
    assert all(r is None or -1 <= r <= 1 for r in tuned["agreement"])
    assert tuned["summary"]["agreement_level"] in ("high", "moderate", "low", None)
    assert (project.report_dir / cam["file"]).is_file()
    (pair,) = data["leakage"]["pairs"]
    assert pair["validation"].endswith("n1v_copy.jpg") and pair["training"].endswith("n1t000.jpg")
    assert (project.report_dir / data["leakage"]["file"]).is_file()


def test_stage_is_skipped_while_inputs_are_unchanged_and_redone_when_they_change(project, fast_figures):
    ran, line = interpret_stage(project)  # no stamp yet: never run
    assert ran and line.startswith("interpret done in ") and "all figures drawn" in line, line
    assert ReportFiles(project.report_dir).stamp("interpret").is_file()
    assert interpret_stage(project) == (False, "interpret unchanged, skipped")
    eda_json = project.report_dir / "eda" / "eda.json"
    eda_json.touch()  # eda.json counts by content: a new time alone changes nothing
    assert not interpret_stage(project)[0]
    eda = json.loads(eda_json.read_text())
    eda["created"] = "2000-01-01T00:00:00+00:00"
    eda_json.write_text(json.dumps(eda))
    assert interpret_stage(project)[0]
    assert interpret_stage(project) == (False, "interpret unchanged, skipped")
    assert interpret_stage(project, force=True)[0]
    checkpoint = RunFiles.of(project.runs_dir, "vanilla").checkpoint
    stat = checkpoint.stat()
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a checkpoint counts by time
    assert interpret_stage(project)[0]
    assert not interpret_stage(project)[0]
    predictions = RunFiles.of(project.runs_dir, "vanilla").predictions
    header, *rows = predictions.read_text().splitlines()
    predictions.write_text("\n".join([header, *reversed(rows)]) + "\n")  # same rows, other order
    assert interpret_stage(project)[0]
    assert not interpret_stage(project)[0]
    figure = project.report_dir / read_interpretation(project)["gradcam"]["file"]
    figure.unlink()  # an output gone: drawn again
    assert interpret_stage(project)[0] and figure.is_file()
    assert not interpret_stage(project)[0]


def test_a_damaged_checkpoint_marks_its_panel_missing_and_leaves_the_rest(project, fast_figures):
    RunFiles.of(project.runs_dir, "lite0_tuned").checkpoint.write_bytes(b"not a checkpoint")
    problems = figure_problems(run_interpretation(project))
    assert len(problems) == 1 and "lite0_tuned" in problems[0]
    data = read_interpretation(project)
    tuned, frozen = sorted(data["gradcam"]["panels"], key=lambda p: p["frozen"])
    assert tuned["error"] and not frozen["error"]
    assert (project.report_dir / data["gradcam"]["file"]).is_file()  # the frozen panel alone
    assert all(g["file"] and not g["error"] for g in data["galleries"])
    assert data["leakage"]["file"]
    ran, line = interpret_stage(project)  # a missing figure is a note in the line, not a failure
    assert ran and "1 figure(s) missing: Grad-CAM of lite0_tuned" in line, line


def test_missing_images_mark_every_figure_missing_without_stopping(project, monkeypatch, fast_figures):
    monkeypatch.setattr(interpret, "_image_root", lambda config, eda: Path("/nonexistent"))
    problems = figure_problems(run_interpretation(project))
    data = read_interpretation(project)
    assert problems
    assert all(g["file"] is None and g["error"] for g in data["galleries"])
    assert data["gradcam"]["file"] is None and data["leakage"]["file"] is None


def test_report_numbers_cites_and_notes_the_interpretation_figures(project, fast_figures):
    from typer.testing import CliRunner

    from monkeyreport.cli import app

    RunFiles.of(project.runs_dir, "lite0_tuned").checkpoint.write_bytes(b"not a checkpoint")
    run_interpretation(project)
    config_file = Path(project.source)
    text = config_file.read_text().replace(str(config_file.parent / "report"), str(project.report_dir)) \
        .replace(str(config_file.parent / "runs"), str(project.runs_dir))
    moved = Path(project.report_dir).parent / "moved.toml"
    moved.write_text(text)
    result = CliRunner().invoke(app, ["render", "--config", str(moved), "--format", "html"])
    assert result.exit_code == 0, result.output
    html = (Path(project.report_dir) / "report.html").read_text()
    assert "Interpretación de los modelos" in html
    assert 'src="interpret/leakage_pairs.jpg"' in html and 'src="interpret/top_losses_vanilla.jpg"' in html
    assert 'src="interpret/gradcam_efficientnet_lite0.jpg"' in html
    assert "No se pudo calcular el mapa" in html and "pesos de partida eran aleatorios" in html
    assert "tiene 2×2 posiciones" in html and "concentración C10" in html  # the method and its resolution
    frozen = read_interpretation(project)["gradcam"]["panels"][0]["summary"]
    assert f"acierta {frozen['n_correct']} de las {frozen['n']} imágenes" in " ".join(html.split())
