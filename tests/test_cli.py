import json

import pytest
from typer.testing import CliRunner

from monkeyreport.cli import app
from monkeyreport.results import ReportFiles

from conftest import REPO, make_dataset

runner = CliRunner()
CONFIG = str(REPO / "configs" / "monkeyreport.toml")


def run(*args: str):
    return runner.invoke(app, list(args))


def test_eda_command_writes_results_and_second_run_is_a_no_op(tmp_path):
    root = make_dataset(tmp_path / "d")
    out = tmp_path / "report"
    first = run("eda", "--config", CONFIG, "--data-dir", str(root), "--out", str(out))
    assert first.exit_code == 0, first.output
    assert first.output.startswith("eda done in ") and "12 training, 6 validation images" in first.output
    assert ReportFiles(out).stamp("eda").is_file()
    assert json.loads((out / "eda" / "eda.json").read_text())["total_images"] == 18
    second = run("eda", "--config", CONFIG, "--data-dir", str(root), "--out", str(out))
    assert second.exit_code == 0 and second.output.strip() == "eda unchanged, skipped"


def test_data_dir_from_environment(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "d")
    monkeypatch.setenv("MONKEYREPORT_DATA", str(root))
    result = run("data", "check", "--config", CONFIG)
    assert result.exit_code == 0, result.output
    assert f"dataset: {root}" in result.output


def test_data_check_lists_every_problem(tmp_path):
    root = make_dataset(tmp_path / "d")
    (root / "training" / "training" / "n0" / "zero.jpg").write_bytes(b"")
    result = run("data", "check", "--config", CONFIG, "--data-dir", str(root))
    assert result.exit_code == 0, result.output
    assert "training: 12 images" in result.output
    assert "skipped training/training/n0/zero.jpg: empty file (0 bytes)" in result.output
    assert "dataset is usable" in result.output


def test_unusable_dataset_exits_non_zero(tmp_path):
    root = make_dataset(tmp_path / "d")
    for f in (root / "validation").rglob("*.jpg"):
        f.write_bytes(b"")
    result = run("data", "check", "--config", CONFIG, "--data-dir", str(root))
    assert result.exit_code == 1
    assert "dataset is NOT usable" in result.output


@pytest.mark.parametrize("args, message", [
    (["eda", "--config", "missing.toml"], "error: missing.toml: config file not found"),
    (["eda", "--config", CONFIG, "--data-dir", "/no/such/folder"],
     "error: /no/such/folder: dataset folder does not exist"),
])
def test_user_errors_are_one_line_with_exit_code_1(args, message):
    result = run(*args)
    assert result.exit_code == 1
    assert result.output.startswith(message)
    assert result.output.count("\n") == 1


def test_bad_option_is_a_usage_error():
    assert run("eda", "--no-such-option").exit_code == 2


def test_download_failure_says_how_to_place_data_by_hand(tmp_path, monkeypatch):
    import kagglehub

    def offline(handle, path=None, *, force_download=False, output_dir=None):
        assert handle == "slothkong/10-monkey-species" and output_dir == str(tmp_path / "ds")
        raise ConnectionError("Failed to resolve 'www.kaggle.com'")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    result = run("data", "download", "--dest", str(tmp_path / "ds"))
    assert result.exit_code == 1
    line = result.output.strip()
    assert "could not download slothkong/10-monkey-species (ConnectionError" in line
    assert f"unpack it into {tmp_path / 'ds'}" in line and "\n" not in line
