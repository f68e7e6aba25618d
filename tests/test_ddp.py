"""Two training processes (strategy "ddp" on the CPU, gloo), run through the CLI as a user would:
Lightning starts the second process by running the same command line again.

The validation split has 9 images, so the two processes' shares are uneven and the padded
loaders repeat a sample: every result must still count each image exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from monkeyreport import pipeline
from monkeyreport.config import load_config
from monkeyreport.datamodule import DecodedImages, Preprocessing, Sample
from monkeyreport.models import create
from monkeyreport.placement import resolve_placement
from monkeyreport.results import ReportFiles
from monkeyreport.run_plan import plan_experiment

from conftest import make_dataset, wait_for_file
from test_training import VANILLA, checkpoint_history, read_csv, write_config

MONKEYREPORT = str(Path(sys.executable).parent / "monkeyreport")
FROZEN = {"name": "frozen", "architecture": "resnet34", "frozen": True}  # trains on cached features
N_VAL = 9


def ddp_config(tmp_path: Path, experiments: list[dict], data: Path, **training) -> Path:
    path = write_config(tmp_path, experiments, data, **training)
    path.write_text(path.read_text().replace("devices = 1", "devices = 2\nstrategy = 'ddp'"))
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MONKEYREPORT, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """One `build` on two processes: eda, training of a fine-tuned and a frozen experiment, render."""
    tmp = tmp_path_factory.mktemp("ddp")
    data = make_dataset(tmp / "d", per_class=(5, 3))  # 15 training, 9 validation images
    config = ddp_config(tmp, [VANILLA, FROZEN], data, epochs=2)
    start = time.perf_counter()
    done = run_cli("build", "--config", str(config))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    print(f"two-process build: {time.perf_counter() - start:.1f} s")
    return {"config": config, "data": data, "runs": tmp / "runs", "report": tmp / "report", "stdout": done.stdout,
            "stderr": done.stderr}


def validation_files(data: Path) -> list[str]:
    return sorted(p.relative_to(data).as_posix() for p in (data / "validation").rglob("*.jpg"))


def macro_f1(cm: np.ndarray) -> float:
    precision = np.diag(cm) / np.maximum(cm.sum(axis=0), 1)
    recall = np.diag(cm) / np.maximum(cm.sum(axis=1), 1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
    return float(f1.mean())


@pytest.mark.parametrize("experiment", ["vanilla", "frozen"])
def test_every_validation_image_counts_exactly_once(built, experiment):
    run = built["runs"] / experiment
    m = json.loads((run / "metrics.json").read_text())
    cm = np.array(m["confusion_matrix"])
    assert m["n_val"] == cm.sum() == N_VAL and m["world_size"] == 2 and m["epochs"] == 2

    rows = read_csv(run / "predictions.csv")
    assert [r["file"] for r in rows] == validation_files(built["data"])  # each file once, in order
    assert all(r["true_class"] == Path(r["file"]).parent.name for r in rows)
    classes = m["classes"]
    from_csv = np.zeros_like(cm)
    for r in rows:
        from_csv[classes.index(r["true_class"]), classes.index(r["predicted_class"])] += 1
    assert (from_csv == cm).all()
    assert m["accuracy"] == pytest.approx(np.mean([r["true_class"] == r["predicted_class"] for r in rows]), abs=1e-6)
    assert m["macro_f1"] == pytest.approx(macro_f1(from_csv), abs=1e-6)
    # history.csv's validation metrics count each image once too: its last epoch is the final model.
    last = read_csv(run / "history.csv")[-1]
    assert float(last["val_accuracy"]) == pytest.approx(m["accuracy"], abs=1e-6)
    assert float(last["val_macro_f1"]) == pytest.approx(m["macro_f1"], abs=1e-6)


@pytest.mark.parametrize("experiment", [VANILLA, FROZEN], ids=["vanilla", "frozen"])
def test_each_row_holds_its_own_images_prediction(built, experiment):
    """The trained model, rebuilt here in one process from the checkpoint, gives every file
    the probabilities its row of predictions.csv holds."""
    run = built["runs"] / experiment["name"]
    m = json.loads((run / "metrics.json").read_text())
    L.seed_everything(m["seed"], verbose=False)  # the random backbone of the frozen run, as trained
    created = create(m["architecture"], len(m["classes"]), m["pretrained"], m["frozen"])
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    trained = created.model.head if m["frozen"] else created.model  # the checkpoint of a frozen run: the head
    trained.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    p = m["preprocessing"]
    preprocessing = Preprocessing(p["resize"], p["crop"], tuple(p["mean"]), tuple(p["std"]))
    rows = read_csv(run / "predictions.csv")
    images = DecodedImages([Sample(built["data"] / r["file"], r["file"], 0) for r in rows], preprocessing, 10**8)
    batch = torch.stack([images[i][0] for i in range(len(rows))])
    with torch.inference_mode():
        expected = torch.softmax(created.model.eval()(preprocessing.normalize(batch)), dim=1).numpy()
    written = np.array([[float(r[f"prob_{c}"]) for c in m["classes"]] for r in rows])
    assert np.allclose(written, expected, atol=1e-4)


def test_build_does_the_work_outside_training_once(built):
    names = [*pipeline.STAGE_NAMES, "build"]
    stages = [line.split(" ")[0] for line in built["stdout"].splitlines() if line.split(" ")[0] in names]
    assert stages == names
    assert "2 trained, 0 failed" in built["stdout"]
    for banner in ("GPU available", "TPU available", "Initializing distributed", "distributed_backend"):
        assert banner not in built["stdout"] + built["stderr"], banner  # in train.log, or dropped (rank 1)
    for name in ("vanilla", "frozen"):
        run = built["runs"] / name
        assert sorted(p.name for p in run.iterdir()) == [
            "checkpoints", "history.csv", "metrics.json", "predictions.csv", "run.json", "train.log"]
        assert [p.name for p in (run / "checkpoints").iterdir()] == ["last.ckpt"]
    assert (built["report"] / "report.pdf").is_file()
    for stage in pipeline.STAGE_NAMES:  # recorded once, by rank 0
        assert ReportFiles(built["report"]).stamp(stage).is_file(), stage
    assert json.loads(ReportFiles(built["report"]).stamp("train").read_text())["complete"] is True


def test_the_number_of_processes_identifies_finished_results(built, tmp_path):
    ddp = load_config(built["config"])
    one = load_config(write_config(tmp_path, [VANILLA], built["data"], epochs=2))
    assert resolve_placement(ddp).world_size == 2 and resolve_placement(one).world_size == 1
    metrics = json.loads((built["runs"] / "vanilla" / "metrics.json").read_text())
    fingerprint = metrics["dataset_fingerprint"]
    assert plan_experiment(ddp, ddp.experiments[0], fingerprint, 2).finished
    assert not plan_experiment(ddp, ddp.experiments[0], fingerprint, 1).finished  # half the effective batch

    del metrics["world_size"]  # a metrics.json from before world_size was recorded: one process
    (one.runs_dir / "vanilla").mkdir(parents=True)
    (one.runs_dir / "vanilla" / "metrics.json").write_text(json.dumps(metrics))
    assert plan_experiment(one, one.experiments[0], fingerprint, 1).finished
    assert not plan_experiment(one, one.experiments[0], fingerprint, 2).finished


def test_a_killed_two_process_run_resumes_from_its_checkpoint(tmp_path):
    data = make_dataset(tmp_path / "d", per_class=(5, 3))
    config = ddp_config(tmp_path, [VANILLA], data, epochs=30)
    process = subprocess.Popen([MONKEYREPORT, "train", "--config", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    run = tmp_path / "runs" / "vanilla"
    checkpoint = run / "checkpoints" / "last.ckpt"
    wait_for_file(checkpoint, process)
    time.sleep(0.3)
    os.killpg(process.pid, signal.SIGKILL)  # both processes, no handler runs
    process.wait()
    assert not (run / "metrics.json").exists()
    finished = len(checkpoint_history(checkpoint))
    assert 1 <= finished < 30

    done = run_cli("train", "--config", str(config))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert [line.split(":")[0] for line in done.stdout.splitlines() if ": accuracy " in line] == ["vanilla"]
    m = json.loads((run / "metrics.json").read_text())
    assert m["resumed"] is True and m["epochs"] == 30 and m["n_val"] == N_VAL and m["world_size"] == 2
    assert [int(h["epoch"]) for h in read_csv(run / "history.csv")] == list(range(1, 31))
