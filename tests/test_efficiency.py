"""Efficiency (summaries.py, context.py): parameters of backbone and head, FLOPs per image,
CPU latency, and the report's table of them and of each experiment's training time."""

from __future__ import annotations

import json
import re

import pytest
from test_render import project  # noqa: F401  (module fixture reused)
from torch import nn

from monkeyreport.context import training_compute
from monkeyreport.models import Classifier, create
from monkeyreport.results import ModelSummary
from monkeyreport.summaries import flops, summarize_architecture


def test_flops_of_a_known_small_model_match_a_hand_count():
    backbone = nn.Sequential(nn.Conv2d(3, 4, kernel_size=3, padding=1), nn.ReLU(), nn.Flatten())
    model = Classifier(backbone, nn.Linear(4 * 8 * 8, 10), frozen=False)
    conv = 2 * (4 * 8 * 8) * (3 * 3 * 3)  # a multiply-add per weight and output value
    linear = 2 * (4 * 8 * 8) * 10
    assert flops(model, (3, 8, 8)) == (conv + linear, conv, linear)


def test_flops_follow_the_crop():
    model = create("vanilla_cnn").model.eval()
    small, large = flops(model, (3, 32, 32)), flops(model, (3, 64, 64))
    assert large[1] == 4 * small[1]  # convolutions: four times the pixels
    assert large[2] == small[2]  # the head sees the same 6x6 pooled features


def test_summary_splits_parameters_between_backbone_and_head():
    summary = summarize_architecture("vanilla_cnn", crop=32)
    assert summary.params_backbone + summary.params_head == summary.params_total
    assert summary.params_head == (128 * 6 * 6 + 1) * 256 + (256 + 1) * 10
    assert summary.params_head / summary.params_total == pytest.approx(0.82, abs=0.005)
    assert summary.params_trainable_frozen == summary.params_head
    assert summary.params_trainable_finetuned == summary.params_total
    e = summary.efficiency
    assert e.input_shape == [3, 32, 32] and e.flops == e.flops_backbone + e.flops_head
    assert e.flops_backbone == 2 * (32 * 32 * 32 * 75 + 16 * 16 * 64 * 800 + 8 * 8 * 128 * 1600)
    assert [lat.batch for lat in e.latency] == [1, 32] and all(lat.ms_per_image > 0 for lat in e.latency)
    assert e.cpu and e.threads >= 1
    assert summary.input_shape == [3, 224, 224]  # the diagrams keep the architecture's own size


def test_training_compute_counts_what_each_variant_runs():
    full = training_compute(10, 8, 2, n_train=100, n_val=20, epochs=5, frozen=False, on_features=False)
    assert full == 10 * (3 * 100 + 20) * 5
    cached = training_compute(10, 8, 2, n_train=100, n_val=20, epochs=5, frozen=True, on_features=True)
    assert cached == 8 * 120 + 2 * (3 * 100 + 20) * 5  # the backbone once, then the head every epoch
    frozen = training_compute(10, 8, 2, n_train=100, n_val=20, epochs=5, frozen=True, on_features=False)
    assert frozen == ((8 + 3 * 2) * 100 + 10 * 20) * 5
    assert cached < frozen < full


def test_the_report_has_the_efficiency_tables(project):  # noqa: F811
    html = (project["report"] / "report.html").read_text()
    table = re.search(r'<table class="efficiency".*?</table>', html, re.DOTALL).group(0)
    architectures = sorted(p.stem for p in (project["report"] / "models").glob("*.json"))
    summaries = [ModelSummary.read(project["report"] / "models" / f"{a}.json") for a in architectures]
    assert len(re.findall(r"<tr><td>", table)) == len(summaries)
    assert "Test CPU, 2 hilos" in html
    timing = re.search(r'<table class="training-time".*?</table>', html, re.DOTALL).group(0)
    runs = sorted(project["runs"].glob("*/metrics.json"))
    assert len(re.findall(r"<tr><td>", timing)) == len(runs)
    seconds = {json.loads(p.read_text())["train_seconds"] for p in runs}
    assert seconds == {1.5} and "1,5" in timing
    assert re.search(r"<h3>Eficiencia</h3>.*<h3>Calibración</h3>", html, re.DOTALL)
