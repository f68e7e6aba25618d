"""The JSON records of report/ (results.py): each round-trips, and a damaged or old file is one
line naming it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from monkeyreport import results
from monkeyreport.config import load_config
from monkeyreport.errors import MonkeyReportError
from monkeyreport.results import (EdaSummary, FiguresManifest, Interpretation, ModelStage, ModelSummary,
                                  ReportFiles, Statistics)

from conftest import REPO

GROUP = {"kind": "exact", "files": [{"file": "training/n0/a.jpg", "split": "training", "class": "n0"},
                                    {"file": "validation/n0/b.jpg", "split": "validation", "class": "n0"}],
         "splits": ["training", "validation"], "classes": ["n0"], "cross_split": True}
ESTIMATE = {"value": 0.5, "low": 0.25, "high": 0.75, "n": 4}

RECORDS = {
    "eda": EdaSummary(
        dataset_root="/data/monkeys",
        classes=[{"code": "n0", "latin_name": "alouatta_palliata", "common_name": "mantled_howler",
                  "display_name": "Alouatta palliata"}],
        splits={"training": {"total": 1, "per_class": {"n0": 1}, "min_per_class": 1, "max_per_class": 1},
                "validation": {"total": 1, "per_class": {"n0": 1}, "min_per_class": 1, "max_per_class": 1}},
        total_images=2, files_scanned=3,
        image_sizes={"width": {"min": 10, "max": 20, "mean": 15.0, "median": 15.0}, "most_common": [],
                     "landscape": 2, "portrait": 0, "square": 0},
        formats={"JPEG": 2}, extensions={".jpg": 2}, modes={"RGB": 2}, main_format="JPEG",
        odd_files=[], unreadable=[{"file": "training/n0/c.jpg", "split": "training", "class": "n0",
                                   "kind": "empty", "reason": "empty file"}],
        duplicates={"near_distance": 10, "groups": [GROUP], "n_groups": 1, "n_cross_split_groups": 1},
        dataset_problems=[], dataset_fingerprint="abc123", created="2024-01-01T00:00:00+00:00",
        figures={"sample_grid": "figures/sample_grid.jpg"}),
    "stats": Statistics(
        n_resamples=2000, confidence=0.95, alpha=0.05, seed=42, n_leaked=1, best="a",
        experiments={"a": {"n_val": 4, "all": {"accuracy": ESTIMATE}, "leak_free": {"accuracy": ESTIMATE},
                           "per_class": [], "most_confused": []}},
        seeds=[42], groups={"a": {"runs": ["a"], "seeds": [42]}},
        comparisons=[{"a": "a", "b": "b", "mcnemar": [{"only_a_right": 3, "only_b_right": 1, "p_value": 0.625}],
                      "test": "mcnemar", "p_value": 0.625, "p_holm": 1.0, "significant": False}],
        parameters=None, problems=["runs/x/metrics.json: not valid JSON (Expecting value, line 1)"],
        calibration={"bins": 15, "norm": "l1", "trusted_below": 0.05}),
    "interpret": Interpretation(
        galleries=[{"experiment": "a", "roles": ["best"], "file": None, "error": "OSError: gone", "items": []}],
        gradcam=None, leakage={"pairs": [], "file": "interpret/leakage_pairs.jpg", "error": ""}),
    "figures": FiguresManifest(cnn="figures/cnn_schematic.png", transfer="figures/transfer_learning.png",
                               diagrams={"resnet34": "figures/arch_resnet34.png", "alexnet": None},
                               confusion={"resnet34": None}, curves=None),
    "summary": ModelSummary(architecture="resnet34", title="ResNet34", family="resnet", library="timm",
                            input_shape=[3, 224, 224], params_total=190,
                            stages=[ModelStage("backbone", "conv1", "Conv2d + BatchNorm2d", [64, 112, 112], 100),
                                    ModelStage("head", "head.0", "Linear", [10], 90)],
                            params_backbone=100, params_head=90, params_trainable_frozen=90,
                            params_trainable_finetuned=190,
                            efficiency=results.ModelEfficiency(
                                input_shape=[3, 224, 224], flops=1000, flops_backbone=900, flops_head=100,
                                latency=[results.Latency(1, 2.5, 10)], cpu="x", threads=2, torch="2")),
}


def one_line_naming(path: Path, exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    return message


@pytest.mark.parametrize("name", RECORDS)
def test_a_record_round_trips_through_its_file(tmp_path, name):
    record = RECORDS[name]
    path = tmp_path / f"{name}.json"
    record.write(path)
    assert type(record).read(path) == record
    assert json.loads(path.read_text()) == record.to_dict()
    assert record.to_dict()["schema"] == type(record).schema_version()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # written through a renamed temporary
    assert type(record).read_if_exists(tmp_path / "absent.json") is None


def test_each_record_carries_the_schema_version_of_its_stage():
    assert EdaSummary.schema_version() == results.EDA_SCHEMA
    assert Statistics.schema_version() == results.STATS_SCHEMA
    assert Interpretation.schema_version() == results.INTERPRET_SCHEMA
    assert FiguresManifest.schema_version() == results.FIGURES_SCHEMA
    assert ModelSummary.schema_version() == results.SUMMARY_SCHEMA


def test_model_stages_are_read_as_records(tmp_path):
    path = tmp_path / "summary.json"
    RECORDS["summary"].write(path)
    stage = ModelSummary.read(path).stages[0]
    assert isinstance(stage, ModelStage) and stage.output_shape == [64, 112, 112]


@pytest.mark.parametrize("name", RECORDS)
def test_another_schema_version_is_one_line_naming_the_file(tmp_path, name):
    record = RECORDS[name]
    path = tmp_path / f"{name}.json"
    expected = type(record).schema_version()
    for found, age in ((expected - 1, "an older"), (expected + 1, "another")):
        results.write_json(path, record.to_dict() | {"schema": found})
        with pytest.raises(MonkeyReportError) as exc:
            type(record).read(path)
        assert one_line_naming(path, exc) == (f"{path}: written by {age} version (schema {found}, expected "
                                              f"{expected}); run `monkeyreport build`")
    data = record.to_dict()
    del data["schema"]  # written before versions were recorded: version 1
    results.write_json(path, data)
    with pytest.raises(MonkeyReportError, match=r"written by an older version \(schema 1, "):
        type(record).read(path)


@pytest.mark.parametrize("name", RECORDS)
def test_a_missing_field_is_one_line_naming_the_file_and_the_field(tmp_path, name):
    record = RECORDS[name]
    path = tmp_path / f"{name}.json"
    data = record.to_dict()
    field = next(k for k in data if k != "schema")
    del data[field]
    results.write_json(path, data)
    with pytest.raises(MonkeyReportError) as exc:
        type(record).read(path)
    assert f"not a valid {type(record).KIND} ('{field}' missing)" in one_line_naming(path, exc)


@pytest.mark.parametrize("name", RECORDS)
def test_invalid_json_or_not_an_object_is_one_line_naming_the_file(tmp_path, name):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(RECORDS[name].to_dict())[:-10])  # cut short
    with pytest.raises(MonkeyReportError) as exc:
        type(RECORDS[name]).read(path)
    assert "not valid JSON" in one_line_naming(path, exc)
    path.write_text("[1, 2]\n")
    with pytest.raises(MonkeyReportError) as exc:
        type(RECORDS[name]).read(path)
    assert "(not a JSON object)" in one_line_naming(path, exc)


@pytest.mark.parametrize("change,problem", [
    ({"total_images": "2"}, "'total_images' is str, expected int"),
    ({"classes": {"n0": "x"}}, "'classes' is dict, expected list[dict[str, str]]"),
    ({"splits": {"training": 3}}, "'splits.training' is int, expected dict[str, Any]"),
])
def test_a_mistyped_field_is_one_line_naming_the_file_and_the_field(tmp_path, change, problem):
    path = tmp_path / "eda.json"
    results.write_json(path, RECORDS["eda"].to_dict() | change)
    with pytest.raises(MonkeyReportError) as exc:
        EdaSummary.read(path)
    assert one_line_naming(path, exc) == f"{path}: not a valid EDA summary ({problem})"


def test_a_mistyped_model_stage_names_its_place(tmp_path):
    path = tmp_path / "resnet34.json"
    data = RECORDS["summary"].to_dict()
    data["stages"][1]["params"] = None
    results.write_json(path, data)
    with pytest.raises(MonkeyReportError, match=re.escape("('stages[1].params' is NoneType, expected int)")):
        ModelSummary.read(path)


def test_stages_stop_on_an_old_eda_json_and_render_on_a_damaged_stats_json(tmp_path):
    from monkeyreport import stats
    from monkeyreport.render import render

    config = load_config(REPO / "configs" / "smoke.toml").with_overrides(out=tmp_path / "report")
    report = ReportFiles(config.report_dir)
    results.write_json(report.eda, RECORDS["eda"].to_dict() | {"schema": results.EDA_SCHEMA - 1})
    with pytest.raises(MonkeyReportError) as exc:
        stats.compute(config)
    assert "written by an older version" in one_line_naming(report.eda, exc)
    report.statistics.parent.mkdir(parents=True)
    report.statistics.write_text('{"schema": 2, "n_resamples": ')
    with pytest.raises(MonkeyReportError) as exc:
        render(config, fmt="html", templates_dir=REPO / "templates")
    assert "not valid JSON" in one_line_naming(report.statistics, exc)


def test_a_damaged_failure_record_marks_its_row_unreadable(tmp_path):
    import dataclasses

    from monkeyreport.context import experiment_rows
    from monkeyreport.results import RunFailure, RunFiles

    config = load_config(REPO / "configs" / "smoke.toml")
    config = dataclasses.replace(config, output=dataclasses.replace(config.output, runs_dir=str(tmp_path)))
    first, second = (RunFiles.of(tmp_path, e.name) for e in config.experiments[:2])
    RunFailure(config.experiments[0].name, "out of memory").write(first.failed)
    second.run_dir.mkdir()
    second.failed.write_text('{"experiment": ')
    rows = {r["name"]: r for r in experiment_rows(config, RECORDS["stats"])}
    failed, damaged, pending = (rows[e.name] for e in config.experiments[:3])
    assert (failed["status"], failed["reason"]) == ("failed", "out of memory")
    assert damaged["status"] == "unreadable" and damaged["file"] == second.failed
    assert damaged["reason"].startswith(f"{second.failed}: not valid JSON")
    assert (pending["status"], pending["reason"]) == ("pending", "")
