"""The feature cache (feature_cache.py): frozen runs that would compute the same backbone
features compute them once; a damaged file is rebuilt."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from monkeyreport import feature_cache
from monkeyreport.config import load_config
from monkeyreport.datamodule import Preprocessing, Sample
from monkeyreport.models import create
from monkeyreport.results import CacheFiles
from monkeyreport.training import train_all

from conftest import make_dataset
from test_ddp import ddp_config, run_cli
from test_training import read_csv, write_config

STATS = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def vanilla_weights(tmp_path: Path) -> Path:
    """A backbone state dict: pretrained weights that do not depend on the run's seed."""
    path = tmp_path / "vanilla.pth"
    torch.manual_seed(0)
    torch.save(create("vanilla_cnn").model.backbone.state_dict(), path)
    return path


def seeded_config(tmp_path: Path, experiments: list[dict], data: Path, seeds: list[int], ddp: bool = False,
                  **training) -> Path:
    """A config with `seeds`, and a configured memory format: measured ("auto"), two runs
    folders could choose different ones, and so compute different features."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = (ddp_config if ddp else write_config)(tmp_path, experiments, data, **training)
    text = path.read_text().replace("precision = '32-true'", "precision = '32-true'\nmemory_format = 'contiguous'")
    path.write_text(f"seeds = {seeds}\n" + text)
    return path


def feature_files(runs: Path) -> list[Path]:
    return sorted(CacheFiles(runs).features.glob("features-*.pt"))


@pytest.fixture
def computed(monkeypatch) -> list[Path]:
    """The feature file of every pass that computes features (not one that reads them)."""
    calls: list[Path] = []
    real = feature_cache.cached_features

    def counting(path, description, labels, compute, **kwargs):
        def counted():
            calls.append(path)
            return compute()
        return real(path, description, labels, counted, **kwargs)

    monkeypatch.setattr(feature_cache, "cached_features", counting)
    return calls


def result_files(run: Path) -> tuple[str, list[dict[str, str]], dict]:
    """What a run learned: predictions, history without timings, metrics without timings."""
    history = [{k: v for k, v in row.items() if k != "seconds"} for row in read_csv(run / "history.csv")]
    metrics = json.loads((run / "metrics.json").read_text())
    learned = {k: metrics[k] for k in ("accuracy", "macro_f1", "confusion_matrix", "epochs", "n_train", "n_val")}
    return (run / "predictions.csv").read_text(), history, learned


def test_three_seeds_and_two_head_recipes_compute_the_features_once(tmp_path, computed, capsys):
    data = make_dataset(tmp_path / "d", per_class=(6, 4))
    weights = str(vanilla_weights(tmp_path))
    plain = {"name": "plain", "architecture": "vanilla_cnn", "frozen": True, "pretrained": weights}
    recipe = plain | {"name": "recipe", "optimizer": "sgd", "selection": "holdout", "holdout_fraction": 0.3}
    cfg = load_config(seeded_config(tmp_path, [plain, recipe], data, [1, 2, 3], epochs=2))
    assert cfg.recipe(cfg.experiments[1]).optimizer == "sgd"
    outcomes = train_all(cfg, show_progress=False)
    assert [o.name for o in outcomes] == [f"{e}-seed{s}" for e in ("plain", "recipe") for s in (1, 2, 3)]
    assert all(o.metrics["n_val"] == 12 and not o.skipped for o in outcomes)
    (path,) = feature_files(cfg.runs_dir)
    assert computed == [path]
    for outcome in outcomes[1:]:
        assert f"features read from {path}" in (outcome.run_dir / "train.log").read_text()
    assert capsys.readouterr().err == ""

    # The same results as a run that computes its features: seed 3 alone, in another folder.
    alone = load_config(seeded_config(tmp_path / "alone", [plain], data, [3], epochs=2))
    (fresh,) = train_all(alone, show_progress=False)
    (own,) = feature_files(alone.runs_dir)
    assert computed == [path, own] and own.name == path.name  # same key, computed again
    assert result_files(fresh.run_dir) == result_files(cfg.runs_dir / "plain-seed3")

    # A damaged file is rebuilt, with one line, by the first run that needs it.
    path.write_bytes(path.read_bytes()[:500])
    rerun = train_all(cfg, force=True, show_progress=False)
    assert computed == [path, own, path] and len(rerun) == 6
    err = capsys.readouterr().err
    assert err == f"warning: feature cache {path} is damaged (unreadable); rebuilding it\n"
    stored = torch.load(path, weights_only=True)
    assert torch.equal(stored["features"]["train"], torch.load(own, weights_only=True)["features"]["train"])
    assert result_files(rerun[2].run_dir) == result_files(fresh.run_dir)


@pytest.mark.parametrize("changes", [
    {"max_images_per_class": 4},  # each seed trains on its own images
    {"pretrained": "none"},  # each seed draws its own random backbone
], ids=["seeded-selection", "random-backbone"])
def test_seeds_whose_features_differ_do_not_share_them(tmp_path, computed, changes):
    data = make_dataset(tmp_path / "d", per_class=(6, 4))
    frozen = {"name": "frozen", "architecture": "vanilla_cnn", "frozen": True,
              "pretrained": changes.get("pretrained", str(vanilla_weights(tmp_path)))}
    training = {k: v for k, v in changes.items() if k != "pretrained"}
    cfg = load_config(seeded_config(tmp_path, [frozen], data, [1, 2], **training))
    train_all(cfg, show_progress=False)
    assert len(computed) == 2 and feature_files(cfg.runs_dir) == sorted(computed)


def test_an_augmented_frozen_run_trains_through_the_network_without_the_cache(tmp_path, computed):
    data = make_dataset(tmp_path / "d", per_class=(6, 4))
    frozen = {"name": "frozen", "architecture": "vanilla_cnn", "frozen": True,
              "pretrained": str(vanilla_weights(tmp_path))}
    cfg = load_config(write_config(tmp_path, [frozen], data, augment="flip"))
    (result,) = train_all(cfg, show_progress=False)
    assert result.metrics["n_val"] == 12
    assert computed == [] and not CacheFiles(cfg.runs_dir).features.exists()


# --------------------------------------------------------------------------- the store itself


SAMPLES = {"train": [Sample(Path(f"/d/t{i}.jpg"), f"t{i}.jpg", i % 3) for i in range(5)],
           "val": [Sample(Path(f"/d/v{i}.jpg"), f"v{i}.jpg", i % 3) for i in range(4)]}
LABELS = {split: torch.tensor([s.label for s in samples]) for split, samples in SAMPLES.items()}
COMPUTE = {"device": "cpu", "precision": "32-true", "memory_format": "contiguous", "batch_size": 4,
           "processes": 1}


def description(backbone: torch.nn.Module | None = None, splits=SAMPLES, crop: int = 32, **compute) -> dict:
    torch.manual_seed(0)
    return feature_cache.describe("vanilla_cnn", backbone or create("vanilla_cnn").model.backbone, "fp", splits,
                                  Preprocessing(40, crop, *STATS), 10**7, COMPUTE | compute)


def features() -> feature_cache.Features:
    return feature_cache.Features({s: torch.arange(len(v) * 6, dtype=torch.float32).view(len(v), 6)
                                   for s, v in SAMPLES.items()}, dict(LABELS))


def test_the_key_changes_with_everything_that_determines_the_features():
    base = feature_cache.feature_path(Path("c"), description())
    assert feature_cache.feature_path(Path("c"), description()) == base
    other_weights = create("vanilla_cnn").model.backbone  # drawn after the seeded one
    channels_last = create("vanilla_cnn").model.backbone
    torch.manual_seed(0)
    channels_last.load_state_dict(create("vanilla_cnn").model.backbone.state_dict())
    channels_last.to(memory_format=torch.channels_last)
    assert feature_cache.feature_path(Path("c"), description(channels_last)) == base  # same weights
    reordered = {"train": SAMPLES["train"][::-1], "val": SAMPLES["val"]}
    for changed in (description(other_weights), description(splits=reordered), description(crop=24),
                    description(precision="bf16-mixed"), description(memory_format="channels_last"),
                    description(batch_size=8), description(processes=2), description(device="cuda H200")):
        assert feature_cache.feature_path(Path("c"), changed) != base


def _other_rows(path: Path) -> None:
    content = torch.load(path, weights_only=True)
    content["features"]["val"] = content["features"]["val"][:-1]
    torch.save(content, path)


def _other_labels(path: Path) -> None:
    content = torch.load(path, weights_only=True)
    content["labels"]["train"] = content["labels"]["train"].flip(0)
    torch.save(content, path)


def _other_description(path: Path) -> None:
    content = torch.load(path, weights_only=True)
    content["description"]["dataset"] = "another"
    torch.save(content, path)


@pytest.mark.parametrize("damage, reason", [
    (lambda path: path.write_bytes(path.read_bytes()[:300]), "unreadable"),
    (lambda path: path.write_bytes(b""), "unreadable"),
    (lambda path: path.write_bytes(pickle.dumps({"not": "torch"})), "unreadable"),
    (_other_rows, "val: 3 rows, expected 4"),
    (_other_labels, "train: labels do not match"),
    (_other_description, "describes other features"),
], ids=["truncated", "empty", "foreign-pickle", "rows", "labels", "description"])
def test_a_damaged_feature_file_is_rebuilt_with_one_line(tmp_path, capsys, damage, reason):
    key = description()
    path = feature_cache.feature_path(tmp_path, key)
    calls = []

    def compute():
        calls.append(1)
        return features()

    first = feature_cache.cached_features(path, key, LABELS, compute)
    assert len(calls) == 1 and capsys.readouterr().err == ""  # a first build says nothing
    damage(path)
    assert feature_cache.read_features(path, key, LABELS) == (None, reason)
    rebuilt = feature_cache.cached_features(path, key, LABELS, compute)
    assert len(calls) == 2
    assert capsys.readouterr().err == f"warning: feature cache {path} is damaged ({reason}); rebuilding it\n"
    again = feature_cache.cached_features(path, key, LABELS, compute)
    assert len(calls) == 2 and capsys.readouterr().err == ""
    for split in SAMPLES:
        assert torch.equal(again.features[split], first.features[split])
        assert torch.equal(rebuilt.features[split], first.features[split])
        assert torch.equal(again.labels[split], LABELS[split])
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == [path.name]  # no temp left


def test_a_process_that_does_not_write_leaves_the_file_alone(tmp_path, capsys):
    """Another process of a multi-process run computes with rank 0 but neither writes nor warns."""
    key = description()
    path = feature_cache.feature_path(tmp_path, key)
    path.write_bytes(b"damaged")
    got = feature_cache.cached_features(path, key, LABELS, features, writer=False)
    assert torch.equal(got.features["train"], features().features["train"])
    assert path.read_bytes() == b"damaged" and capsys.readouterr().err == ""
    assert not path.with_name(path.name + ".lock").exists()


def test_processes_that_disagree_all_compute(tmp_path):
    """One process found the file and another did not: both compute (a collective)."""
    key = description()
    path = feature_cache.feature_path(tmp_path, key)
    feature_cache.write_features(path, key, features())
    calls = []
    feature_cache.cached_features(path, key, LABELS, lambda: calls.append(1) or features(), agree=lambda found: False)
    assert calls == [1]


def test_two_processes_share_the_features_of_two_seeds(tmp_path):
    """Under DDP the first pass computes in both processes and rank 0 writes; the second seed
    finds the file in both and reads it."""
    data = make_dataset(tmp_path / "d", per_class=(5, 3))
    frozen = {"name": "frozen", "architecture": "vanilla_cnn", "frozen": True,
              "pretrained": str(vanilla_weights(tmp_path))}
    done = run_cli("train", "--config", str(seeded_config(tmp_path, [frozen], data, [1, 2], ddp=True)))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (path,) = feature_files(tmp_path / "runs")
    assert "features computed into" in (tmp_path / "runs" / "frozen-seed1" / "train.log").read_text()
    assert f"features read from {path}" in (tmp_path / "runs" / "frozen-seed2" / "train.log").read_text()
    for seed in (1, 2):
        m = json.loads((tmp_path / "runs" / f"frozen-seed{seed}" / "metrics.json").read_text())
        assert m["n_val"] == 9 and m["world_size"] == 2


def test_two_workers_needing_the_same_features_compute_them_once(tmp_path):
    """Workers of one runs folder: the second waits on the first's lock, then reads its file."""
    import threading
    import time

    key = description()
    path = feature_cache.feature_path(tmp_path, key)
    calls, got = [], []

    def slow():
        calls.append(1)
        time.sleep(0.5)
        return features()

    workers = [threading.Thread(target=lambda: got.append(feature_cache.cached_features(path, key, LABELS, slow)))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert calls == [1] and len(got) == 2
    assert torch.equal(got[0].features["val"], got[1].features["val"])
