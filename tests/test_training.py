import csv
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
from typer.testing import CliRunner

from monkeyreport import training
from monkeyreport.cli import app
from monkeyreport.config import load_config
from monkeyreport.errors import MonkeyReportError
from monkeyreport.results import Predictions, RunFailure, RunFiles
from monkeyreport.training import ExperimentFailure, Interrupted, train_all

from conftest import make_dataset, wait_for_file

VANILLA = {"name": "vanilla", "architecture": "vanilla_cnn"}


def write_config(tmp_path: Path, experiments: list[dict], data: Path, **training) -> Path:
    settings = {"epochs": 1, "batch_size": 4, "resize": 40, "crop": 32, "num_workers": 0} | training
    lines = [f"[data]\nroot = '{data}'", f"[output]\nreport_dir = '{tmp_path / 'report'}'\n"
             f"runs_dir = '{tmp_path / 'runs'}'", "[trainer]\naccelerator = 'cpu'\ndevices = 1\nprecision = '32-true'", "[training]"]
    lines += [f"{k} = {v!r}" for k, v in settings.items()]
    for exp in experiments:
        lines.append("[[experiments]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in exp.items()]
    path = tmp_path / "test.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def dataset(tmp_path):
    return make_dataset(tmp_path / "d", per_class=(6, 4))


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def checkpoint_history(path: Path) -> list[dict[str, float]]:
    """The epoch rows a Lightning checkpoint holds (history.EpochHistory's state)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)["callbacks"]["EpochHistory"]["rows"]


def test_results_contract_and_metrics_agree_with_predictions(tmp_path, dataset):
    cfg = load_config(write_config(tmp_path, [VANILLA], dataset, epochs=2))
    (result,) = train_all(cfg, show_progress=False)
    run = result.run_dir
    m = json.loads((run / "metrics.json").read_text())
    for key in ("experiment", "architecture", "frozen", "pretrained", "accuracy", "macro_f1",
                "confusion_matrix", "classes", "params_total", "params_trainable", "epochs",
                "train_seconds", "device", "config_hash", "dataset_fingerprint", "versions"):
        assert key in m
    assert m["epochs"] == 2 and m["classes"] == ["n0", "n1", "n2"] and m["device"] == "cpu"
    cm = np.array(m["confusion_matrix"])
    assert cm.sum() == m["n_val"] == 12
    assert m["accuracy"] == pytest.approx(np.trace(cm) / cm.sum(), abs=1e-6)
    precision = np.diag(cm) / np.maximum(cm.sum(axis=0), 1)
    recall = np.diag(cm) / np.maximum(cm.sum(axis=1), 1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
    assert m["macro_f1"] == pytest.approx(f1.mean(), abs=1e-6)

    rows = read_csv(run / "predictions.csv")
    assert len(rows) == 12
    for row in rows:
        probs = {c: float(row[f"prob_{c}"]) for c in m["classes"]}
        assert max(probs, key=probs.get) == row["predicted_class"]
        assert sum(probs.values()) == pytest.approx(1, abs=1e-4)
    accuracy = np.mean([r["true_class"] == r["predicted_class"] for r in rows])
    assert m["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    from_csv = np.zeros_like(cm)
    for r in rows:
        from_csv[m["classes"].index(r["true_class"]), m["classes"].index(r["predicted_class"])] += 1
    assert (from_csv == cm).all()

    history = read_csv(run / "history.csv")
    assert [int(h["epoch"]) for h in history] == [1, 2]
    assert float(history[-1]["val_accuracy"]) == pytest.approx(m["accuracy"], abs=1e-6)
    n_train = m["n_train"]
    for row in history:  # a fraction of the epoch's training images
        assert float(row["train_accuracy"]) * n_train == pytest.approx(round(float(row["train_accuracy"]) * n_train))
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_rerun_is_skipped_and_force_or_a_change_retrains(tmp_path, dataset, monkeypatch):
    path = write_config(tmp_path, [VANILLA], dataset)
    cfg = load_config(path)
    (first,) = train_all(cfg, show_progress=False)
    (second,) = train_all(cfg, show_progress=False)
    assert not first.skipped and second.skipped and second.metrics == first.metrics
    (forced,) = train_all(cfg, force=True, show_progress=False)
    assert not forced.skipped
    (more_epochs,) = train_all(cfg.with_overrides(epochs=2), show_progress=False)
    assert not more_epochs.skipped and more_epochs.metrics["epochs"] == 2
    (first.run_dir / "history.csv").write_text("stale\n")

    def stop_at_start(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "_fit", stop_at_start)
    with pytest.raises(KeyboardInterrupt):
        train_all(cfg, force=True, show_progress=False)
    assert not (first.run_dir / "history.csv").exists()  # a fresh start clears old results
    assert not (first.run_dir / "metrics.json").exists()


class _StopInSecondEpoch(L.Callback):
    def on_train_batch_start(self, trainer, *args):
        if trainer.current_epoch == 1:
            raise KeyboardInterrupt


def stop_in_second_epoch(monkeypatch) -> None:
    """Every Trainer of training.py stops (Ctrl-C) when its second epoch starts."""
    real_trainer = training._trainer

    def trainer_with_stop(*args):
        trainer = real_trainer(*args)
        trainer.callbacks.append(_StopInSecondEpoch())
        return trainer

    monkeypatch.setattr(training, "_trainer", trainer_with_stop)


def test_interrupted_training_resumes_from_its_last_checkpoint(tmp_path, dataset, monkeypatch):
    cfg = load_config(write_config(tmp_path, [VANILLA], dataset, epochs=3))
    cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, memory_format="contiguous"))  # one layout in both folders
    stop_in_second_epoch(monkeypatch)
    with pytest.raises(Interrupted, match="vanilla: interrupted after 1 finished epoch"):
        train_all(cfg, show_progress=False)
    run = cfg.runs_dir / "vanilla"
    assert (run / "checkpoints" / "last.ckpt").is_file() and not (run / "metrics.json").exists()
    assert [row["epoch"] for row in checkpoint_history(run / "checkpoints" / "last.ckpt")] == [1]

    monkeypatch.undo()
    (resumed,) = train_all(cfg, show_progress=False)
    assert resumed.metrics["resumed"] is True and resumed.metrics["epochs"] == 3
    history = read_csv(run / "history.csv")
    assert [int(h["epoch"]) for h in history] == [1, 2, 3]

    # Same data order per epoch and restored optimizer state: as if never interrupted.
    straight = dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, runs_dir=str(tmp_path / "straight")))
    (uninterrupted,) = train_all(straight, show_progress=False)
    assert uninterrupted.metrics["confusion_matrix"] == resumed.metrics["confusion_matrix"]
    for a, b in zip(read_csv(uninterrupted.run_dir / "history.csv"), history):
        assert float(b["train_loss"]) == pytest.approx(float(a["train_loss"]), abs=1e-5)


def test_a_failing_experiment_does_not_stop_the_others(tmp_path, dataset):
    import torch

    from monkeyreport.models import create

    wrong = tmp_path / "vanilla_weights.pth"  # exists, but holds another model's tensors
    torch.save(create("vanilla_cnn").model.backbone.state_dict(), wrong)
    broken = {"name": "broken", "architecture": "resnet34", "pretrained": str(wrong)}
    path = write_config(tmp_path, [broken, VANILLA], dataset)
    outcomes = train_all(load_config(path), show_progress=False)
    assert isinstance(outcomes[0], ExperimentFailure)
    assert outcomes[0].reason.startswith("resnet34: ") and "lacks" in outcomes[0].reason
    assert RunFailure.read(RunFiles.of(tmp_path / "runs", "broken").failed) == RunFailure("broken", outcomes[0].reason)
    assert outcomes[1].metrics["experiment"] == "vanilla"
    result = CliRunner().invoke(app, ["train", "--config", str(path)])
    assert result.exit_code == 1
    assert "broken: FAILED: resnet34: " in result.output
    assert "1 of 2 experiment(s) failed" in result.output


def test_config_errors_name_the_experiment_before_anything_runs(tmp_path, dataset):
    missing = {"name": "mine", "architecture": "resnet34", "pretrained": str(tmp_path / "nope.pth")}
    result = CliRunner().invoke(app, ["train", "--config", str(write_config(tmp_path, [missing], dataset))])
    assert result.exit_code == 1
    assert "'experiments[0].pretrained' (experiment 'mine'): weights file" in result.output
    unknown = {"name": "vgg_try", "architecture": "vgg16"}
    result = CliRunner().invoke(app, ["train", "--config", str(write_config(tmp_path, [VANILLA, unknown], dataset))])
    assert result.exit_code == 1
    assert "'experiments[1].architecture' (experiment 'vgg_try'): unknown architecture 'vgg16'" in result.output
    assert result.output.count("\n") == 1 and not (tmp_path / "runs").exists()


def test_only_names_a_configured_experiment(tmp_path, dataset):
    cfg = load_config(write_config(tmp_path, [VANILLA], dataset))
    with pytest.raises(MonkeyReportError, match="--only: no experiment named 'nope'"):
        train_all(cfg, only=["nope"], show_progress=False)


def test_frozen_lite0_with_packaged_weights_learns_the_monkeys(tmp_path, shared_dataset):
    """Transfer learning for real, offline: the frozen ImageNet backbone + a trained head."""
    lite0 = {"name": "lite0", "architecture": "efficientnet_lite0", "frozen": True, "pretrained": "packaged"}
    cfg = load_config(write_config(tmp_path, [lite0], shared_dataset, epochs=1, batch_size=32,
                                   resize=146, crop=128, num_workers=2))
    (result,) = train_all(cfg, show_progress=False)
    assert result.metrics["n_val"] == 272
    assert result.metrics["accuracy"] >= 0.90, result.metrics["accuracy"]


def test_killed_run_leaves_complete_files_and_the_rerun_resumes(tmp_path, dataset):
    path = write_config(tmp_path, [VANILLA], dataset, epochs=40)
    command = [str(Path(sys.executable).parent / "monkeyreport"), "train", "--config", str(path)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = tmp_path / "runs" / "vanilla"
    checkpoint = run / "checkpoints" / "last.ckpt"
    wait_for_file(checkpoint, process)
    time.sleep(0.3)
    process.kill()  # SIGKILL: no handler runs
    process.wait()
    assert not (run / "metrics.json").exists() and not (run / "history.csv").exists()
    finished = len(checkpoint_history(checkpoint))
    assert 1 <= finished < 40
    (resumed,) = train_all(load_config(path), show_progress=False)
    assert resumed.metrics["resumed"] is True and resumed.metrics["epochs"] == 40
    assert [int(h["epoch"]) for h in read_csv(run / "history.csv")] == list(range(1, 41))


def test_predictions_written_are_read_back(tmp_path):
    written = Predictions(["a/1.jpg", "b/2.jpg", "c/3.jpg"], ["n0", "n1"], np.array([0, 1, 1]), np.array([0, 0, 1]),
                          np.array([[0.75, 0.25], [0.5, 0.5], [0.125, 0.875]]))
    path = tmp_path / "predictions.csv"
    written.write(path)
    assert path.read_text().splitlines()[:2] == ["file,true_class,predicted_class,prob_n0,prob_n1",
                                                 "a/1.jpg,n0,n0,0.750000,0.250000"]
    read = Predictions.read(path)
    assert (read.files, read.classes) == (written.files, written.classes)
    for name in ("true", "predicted", "probabilities"):
        assert np.array_equal(getattr(read, name), getattr(written, name)), name
