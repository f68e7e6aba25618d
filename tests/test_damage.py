"""Damaged files left by an accident (a full disk, a copy cut short): a checkpoint is set aside
and its experiment starts afresh, an image cache is rebuilt; each says so in one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.utilities import rank_zero_only
from typer.testing import CliRunner

from monkeyreport import results
from monkeyreport.cli import app
from monkeyreport.config import load_config
from monkeyreport.datamodule import Preprocessing, open_image_cache
from monkeyreport.errors import MonkeyReportError
from monkeyreport.results import RunFiles
from monkeyreport.run_plan import checkpoint_problem, plan_experiment
from monkeyreport.training import train_all

from conftest import make_dataset
from test_caches import STATS, _cache
from test_training import VANILLA, write_config

OTHER = {"name": "other", "architecture": "vanilla_cnn"}


def test_damaged_checkpoint_starts_afresh_kept_aside_and_the_others_run(tmp_path):
    """The measured accident: metrics.json gone, last.ckpt overwritten by 1000 random bytes."""
    data = make_dataset(tmp_path / "d", per_class=(6, 4))
    path = write_config(tmp_path, [VANILLA, OTHER], data, epochs=2)
    train_all(load_config(path), only=["vanilla"], show_progress=False)
    files = RunFiles.of(tmp_path / "runs", "vanilla")
    damage = os.urandom(1000)
    files.checkpoint.write_bytes(damage)
    files.metrics.unlink()

    result = CliRunner().invoke(app, ["train", "--config", str(path)])
    assert result.exit_code == 0, result.output
    warning, *summaries = result.output.splitlines()
    assert warning.startswith(f"warning: vanilla: checkpoint {files.checkpoint} is unreadable (")
    assert warning.endswith("starting afresh")
    assert [line.split(":")[0] for line in summaries] == ["vanilla", "other"]
    assert all(": accuracy " in line for line in summaries)
    (kept,) = files.run_dir.glob("last.ckpt.damaged-*")
    assert kept.read_bytes() == damage and kept.name in warning
    metrics = results.read_json(files.metrics)
    assert metrics["resumed"] is False and metrics["epochs"] == 2
    assert files.checkpoint.is_file() and checkpoint_problem(files.checkpoint) is None


def test_every_process_plans_the_same_for_a_damaged_checkpoint(tmp_path, monkeypatch, capsys):
    """Rank 0 moves the damaged file aside; a process planning before the move (another node)
    finds it damaged, one planning after finds none: all start afresh, one line in all."""
    cfg = load_config(write_config(tmp_path, [VANILLA], make_dataset(tmp_path / "d")))
    experiment, files = cfg.experiments[0], RunFiles.of(cfg.runs_dir, "vanilla")

    def plan(rank: int):
        monkeypatch.setattr(rank_zero_only, "rank", rank)
        return plan_experiment(cfg, experiment, "fingerprint", 2)

    plan(0).started.write(files.started)
    files.checkpoint.parent.mkdir()
    torch.save({"state_dict": {"w": torch.zeros(3)}}, files.checkpoint)
    assert plan(1).resume and plan(0).resume  # readable: every process resumes

    files.checkpoint.write_bytes(files.checkpoint.read_bytes()[:500])  # cut short
    assert not plan(1).resume and files.checkpoint.is_file()
    assert capsys.readouterr().err == ""
    assert not plan(0).resume and not files.checkpoint.exists()
    assert len(list(files.run_dir.glob("last.ckpt.damaged-*"))) == 1
    assert not plan(1).resume
    assert capsys.readouterr().err.count("\n") == 1


def _flip_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 16]) + data[middle + 16:]


@pytest.mark.parametrize("damage, reason", [
    (lambda good: os.urandom(1000), "BadZipFile"),
    (lambda good: good[: len(good) // 2], "BadZipFile"),
    (lambda good: b"", "BadZipFile"),
    (_flip_middle, "checksum mismatch"),
], ids=["random", "truncated", "empty", "flipped"])
def test_checkpoint_damage_is_detected(tmp_path, damage, reason):
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.arange(50_000.0)}}, path)
    assert checkpoint_problem(path) is None
    path.write_bytes(damage(path.read_bytes()))
    assert reason in checkpoint_problem(path)


def test_checkpoint_that_is_not_lightnings_is_not_resumed(tmp_path):
    path = tmp_path / "last.ckpt"
    torch.save({"w": torch.zeros(2)}, path)
    assert checkpoint_problem(path) == "not a Lightning checkpoint"


def _truncate(path):
    path.write_bytes(path.read_bytes()[:1000])


def _grow(path):
    with path.open("ab") as f:
        f.write(b"\0" * 10)


def _other_files(path):
    sidecar = path.with_suffix(".json")
    description = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps(description | {"files": description["files"][::-1]}))


@pytest.mark.parametrize("damage, reason", [
    (_truncate, "1000 bytes, expected 36864"),
    (_grow, "36874 bytes, expected 36864"),
    (lambda path: path.with_suffix(".json").unlink(), ".json missing"),
    (lambda path: path.with_suffix(".json").write_text("{"), ".json unreadable"),
    (_other_files, ".json does not match"),
], ids=["truncated", "grown", "sidecar-missing", "sidecar-unreadable", "sidecar-other-files"])
def test_damaged_image_cache_is_rebuilt_with_one_line(tmp_path, capsys, damage, reason):
    root = make_dataset(tmp_path / "d")
    first, samples = _cache(root, tmp_path)
    path, expected = Path(first.filename), np.array(first)
    del first  # no mapping of the file while it is damaged
    assert capsys.readouterr().err == ""  # a first build says nothing

    damage(path)
    with pytest.raises(MonkeyReportError, match=f"image cache is damaged \\(.*{reason}"):
        open_image_cache(path, samples, Preprocessing(40, 32, *STATS))
    rebuilt, _ = _cache(root, tmp_path)
    assert np.array_equal(rebuilt, expected)
    err = capsys.readouterr().err
    assert err.startswith(f"warning: image cache {path} is damaged (") and reason in err
    assert err.endswith("); rebuilding it\n") and err.count("\n") == 1

    stamp = os.stat(path).st_mtime_ns
    _cache(root, tmp_path)
    assert os.stat(path).st_mtime_ns == stamp and capsys.readouterr().err == ""


def test_two_processes_both_start_afresh_from_a_damaged_checkpoint(tmp_path):
    """Were the processes to decide differently, one would resume and the other not: the run
    would fail or hang instead of training from scratch."""
    from test_ddp import ddp_config, run_cli

    config = ddp_config(tmp_path, [VANILLA], make_dataset(tmp_path / "d", per_class=(5, 3)), epochs=2)
    assert run_cli("train", "--config", str(config)).returncode == 0
    files = RunFiles.of(tmp_path / "runs", "vanilla")
    files.checkpoint.write_bytes(os.urandom(1000))
    files.metrics.unlink()

    done = run_cli("train", "--config", str(config))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stderr.count("is unreadable") == 1 and done.stderr.count("\n") == 1, done.stderr
    assert [line.split(":")[0] for line in done.stdout.splitlines()] == ["vanilla"]
    metrics = results.read_json(files.metrics)
    assert metrics["resumed"] is False and metrics["world_size"] == 2 and metrics["epochs"] == 2
    assert len(list(files.run_dir.glob("last.ckpt.damaged-*"))) == 1
