"""The training recipe ([training] keys per experiment): each key reaches the object it sets,
the defaults train exactly as before, and `selection = "holdout"` chooses an epoch on held-out
training images without duplicates straddling the split."""

import dataclasses
import shutil
from collections import Counter

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from monkeyreport import training
from monkeyreport.config import TrainingConfig, load_config
from monkeyreport.data import list_files, locate, scan
from monkeyreport.datamodule import MonkeyDataModule, Preprocessing, select_samples
from monkeyreport.eda import find_duplicates
from monkeyreport.errors import MonkeyReportError
from monkeyreport.holdout import holdout_split
from monkeyreport.lit_module import LitClassifier
from monkeyreport.models import create
from monkeyreport.recipe import HeadFirst, train_augmentation
from monkeyreport.results import RunMetrics, RunStart
from monkeyreport.run_state import experiment_hash
from monkeyreport.training import train_all

from conftest import make_dataset
from test_training import VANILLA, read_csv, stop_in_second_epoch, write_config


@pytest.fixture
def dataset(tmp_path):
    return make_dataset(tmp_path / "d", per_class=(8, 4))


def fit_tensors(model, recipe: TrainingConfig, callbacks=()) -> tuple[list[list[float]], LitClassifier]:
    """Fit `model` on 8 random 16-px images for recipe.epochs; the rate of each parameter
    group at the start of each epoch."""
    rates: list[list[float]] = []

    class Rates(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            rates.append([g["lr"] for g in trainer.optimizers[0].param_groups])

    data = TensorDataset(torch.rand(8, 3, 16, 16), torch.arange(8) % 3, torch.arange(8))
    module = LitClassifier(model, 3, recipe)
    trainer = L.Trainer(max_epochs=recipe.epochs, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[*callbacks, Rates()])
    trainer.fit(module, DataLoader(data, batch_size=4), DataLoader(data, batch_size=4))
    return rates, module


# ----------------------------------------------------------------------------- the defaults


def test_default_recipe_is_adam_over_the_trainable_parameters_at_a_constant_rate():
    for frozen in (False, True):
        model = create("vanilla_cnn", 3, frozen=frozen).model
        module = LitClassifier(model, 3, TrainingConfig(learning_rate=0.003))
        optimizer = module.configure_optimizers()  # no scheduler: a bare optimizer, as before
        before = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=0.003)
        assert type(optimizer) is torch.optim.Adam
        assert optimizer.defaults == before.defaults
        (group,) = optimizer.param_groups
        assert group["params"] == before.param_groups[0]["params"]
        assert {k: v for k, v in group.items() if k != "params"} == {
            k: v for k, v in before.param_groups[0].items() if k != "params"}
        assert module.loss.label_smoothing == 0
    assert train_augmentation("none", 32, (0.5, 0.5, 0.5)) is None


def test_default_recipe_trains_as_the_code_before_it(tmp_path, dataset, monkeypatch):
    cfg = load_config(write_config(tmp_path, [VANILLA], dataset, epochs=2))
    (tmp_path / "x").mkdir()
    explicit = load_config(write_config(tmp_path / "x", [VANILLA | {"optimizer": "adam", "selection": "last"}],
                                        dataset, epochs=2, scheduler="none", augment="none", label_smoothing=0.0))
    run = cfg.runs[0]
    assert experiment_hash(cfg.for_run(run), run.experiment) == experiment_hash(
        explicit.for_run(explicit.runs[0]), explicit.runs[0].experiment)
    # One layout for both runs folders: each measuring its own could pick another one.
    cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, memory_format="contiguous"))
    (new,) = train_all(cfg, show_progress=False)

    def adam_as_before(self):  # lit_module.py before the recipe keys
        return torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=self.training_config.learning_rate)

    monkeypatch.setattr(LitClassifier, "configure_optimizers", adam_as_before)
    old_cfg = dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, runs_dir=str(tmp_path / "old")))
    (old,) = train_all(old_cfg, show_progress=False)
    assert (new.run_dir / "predictions.csv").read_bytes() == (old.run_dir / "predictions.csv").read_bytes()
    for a, b in zip(read_csv(new.run_dir / "history.csv"), read_csv(old.run_dir / "history.csv")):
        assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    assert new.metrics["selection"] == {"mode": "last", "epoch": 2, "n_holdout": 0,
                                        "checkpoint": "checkpoints/last.ckpt"}
    assert new.metrics["recipe"] == {} and new.metrics["n_train"] == 24


def test_metrics_written_before_selection_and_recipe_still_read(tmp_path, dataset):
    cfg = load_config(write_config(tmp_path, [VANILLA], dataset))
    (result,) = train_all(cfg, show_progress=False)
    old = {k: v for k, v in result.metrics.items() if k not in ("selection", "recipe")}
    metrics = RunMetrics.from_dict(old, tmp_path / "metrics.json")
    assert metrics.selection == {} and metrics.recipe == {} and metrics.selected_epoch == 1


# ----------------------------------------------------------------------------- optimizer and schedule


def test_optimizer_weight_decay_and_layer_decay_reach_the_parameter_groups():
    recipe = TrainingConfig(epochs=2, optimizer="adamw", weight_decay=0.05, layer_decay=0.5, learning_rate=0.001)
    rates, module = fit_tensors(create("vanilla_cnn", 3).model, recipe)
    optimizer = module.trainer.optimizers[0]
    assert type(optimizer) is torch.optim.AdamW
    names = {id(p): n for n, p in module.model.named_parameters()}
    by_layer = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            by_layer[names[id(p)]] = (group["lr"], group["weight_decay"])
    # Three convolutions, then the head (one layer): each layer half the rate of the next.
    assert [by_layer[f"backbone.{i}.weight"][0] for i in (0, 3, 6)] == pytest.approx([1.25e-4, 2.5e-4, 5e-4])
    assert by_layer["head.0.weight"][0] == by_layer["head.2.weight"][0] == pytest.approx(1e-3)
    assert by_layer["backbone.0.weight"][1] == 0.05 and by_layer["backbone.0.bias"][1] == 0  # timm: no decay on 1-d
    assert rates[0] == rates[1] and len(set(rates[0])) == 4  # "none": the rates held from the first epoch


def test_a_head_alone_trains_without_layer_decay():
    recipe = TrainingConfig(epochs=1, layer_decay=0.5, optimizer="sgd")
    module = LitClassifier(create("vanilla_cnn", 3).model.head, 3, recipe)
    optimizer = module.configure_optimizers()
    assert type(optimizer) is torch.optim.SGD and len(optimizer.param_groups) == 1


def test_unknown_optimizer_is_a_one_line_error():
    module = LitClassifier(create("vanilla_cnn", 3).model, 3, TrainingConfig(optimizer="nope"))
    with pytest.raises(MonkeyReportError, match="'training.optimizer' 'nope'"):
        module.configure_optimizers()


def test_cosine_schedule_warms_up_then_decays_per_epoch():
    recipe = TrainingConfig(epochs=6, scheduler="cosine", warmup_epochs=2, learning_rate=0.001)
    rates, _ = fit_tensors(create("vanilla_cnn", 3).model, recipe)
    lr = [r[0] for r in rates]
    assert lr[0] == pytest.approx(1e-5)  # warm-up from 1 % of the rate
    assert lr[0] < lr[1] < 0.001
    assert lr[2] == pytest.approx(0.001 * 0.5 * (1 + np.cos(np.pi * 2 / 6)))  # cosine over the 6 epochs
    assert lr[2] > lr[3] > lr[4] > lr[5] > 0 and lr[3] < max(lr)


def test_step_schedule_decays_every_third_of_the_epochs():
    rates, _ = fit_tensors(create("vanilla_cnn", 3).model, TrainingConfig(epochs=6, scheduler="step"))
    assert [r[0] for r in rates] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5])


def test_a_resumed_scheduled_run_trains_as_a_straight_one(tmp_path, dataset, monkeypatch):
    cfg = load_config(write_config(tmp_path, [VANILLA], dataset, epochs=3, scheduler="cosine", warmup_epochs=1))
    cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, memory_format="contiguous"))  # one layout in both folders
    stop_in_second_epoch(monkeypatch)
    with pytest.raises(training.Interrupted):
        train_all(cfg, show_progress=False)
    monkeypatch.undo()
    (resumed,) = train_all(cfg, show_progress=False)
    straight = dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, runs_dir=str(tmp_path / "straight")))
    (uninterrupted,) = train_all(straight, show_progress=False)
    assert resumed.metrics["resumed"] and resumed.metrics["recipe"] == {"scheduler": "cosine", "warmup_epochs": 1}
    for a, b in zip(read_csv(uninterrupted.run_dir / "history.csv"), read_csv(resumed.run_dir / "history.csv")):
        assert float(b["train_loss"]) == pytest.approx(float(a["train_loss"]), abs=1e-5)
    assert uninterrupted.metrics["confusion_matrix"] == resumed.metrics["confusion_matrix"]


# ----------------------------------------------------------------------------- loss, augmentation, freezing


def test_label_smoothing_is_in_the_training_loss_only():
    module = LitClassifier(create("vanilla_cnn", 3).model, 3, TrainingConfig(label_smoothing=0.1))
    assert module.loss.label_smoothing == 0.1 and module.val_criterion.label_smoothing == 0
    logits, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    assert module.loss(logits, y) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y,
                                                                                            label_smoothing=0.1)))


def _datamodule(dataset, tmp_path, augment):
    layout = locate(dataset)
    records = scan(layout, list_files(layout), 10**8, 1, False)
    prep = Preprocessing(40, 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    images = MonkeyDataModule(select_samples(layout, records, "training"), select_samples(layout, records, "validation"),
                              prep, 8, 0, 10**8, cache_dir=tmp_path / "cache", seed=3,
                              augment=train_augmentation(augment, 32, prep.mean))
    images.prepare_data()
    images.setup("fit")
    return images


def test_augmentation_changes_training_images_only(tmp_path, dataset):
    plain, flipped = _datamodule(dataset, tmp_path, "none"), _datamodule(dataset, tmp_path, "flip")
    assert plain._cache_path(plain.train_samples) == flipped._cache_path(flipped.train_samples)  # one cache
    torch.manual_seed(0)
    (x, y, i), (fx, fy, fi) = next(iter(plain.train_dataloader())), next(iter(flipped.train_dataloader()))
    assert torch.equal(i, fi) and torch.equal(y, fy)  # same images, same order
    same = [torch.equal(a, b) for a, b in zip(x, fx)]
    mirrored = [torch.equal(a.flip(-1), b) for a, b in zip(x, fx)]
    assert all(s or m for s, m in zip(same, mirrored)) and not all(same)
    for loader in ("val_dataloader", "predict_dataloader"):
        a, b = getattr(plain, loader)(), getattr(flipped, loader)()
        a, b = (a[0], b[0]) if isinstance(a, list) else (a, b)
        assert all(torch.equal(u[0], v[0]) for u, v in zip(a, b))

    rand = _datamodule(dataset, tmp_path, "rand-m9-mstd0.5")
    image = rand._datasets["fit"][0][0]
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)
    with pytest.raises(MonkeyReportError, match="'training.augment'"):
        train_augmentation("rand-q9", 32, (0.5, 0.5, 0.5))


def test_an_augmented_frozen_run_trains_on_images_not_features(tmp_path, dataset):
    frozen = {"name": "frozen", "architecture": "vanilla_cnn", "frozen": True, "augment": "flip"}
    cfg = load_config(write_config(tmp_path, [frozen], dataset))
    (result,) = train_all(cfg, show_progress=False)
    assert RunStart.read(result.run_dir / "run.json").trains_on_features is False
    state = torch.load(result.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert any(k.startswith("model.backbone.") for k in state)  # the whole Classifier, not a head on features
    assert result.metrics["recipe"] == {"augment": "flip"}


def test_freeze_epochs_trains_the_head_alone_first():
    model = create("vanilla_cnn", 3).model
    start = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []

    class Watch(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            m = pl_module.model
            seen.append(({k: v.clone() for k, v in m.state_dict().items()},
                         any(p.requires_grad for p in m.backbone.parameters()), m.backbone.training))

    fit_tensors(model, TrainingConfig(epochs=2, freeze_epochs=1), callbacks=[HeadFirst(1), Watch()])
    (first, grad_1, mode_1), (second, grad_2, mode_2) = seen
    assert not grad_1 and not mode_1 and grad_2 and mode_2
    backbone = [k for k in start if k.startswith("backbone.")]
    head = [k for k in start if k.startswith("head.")]
    assert all(torch.equal(first[k], start[k]) for k in backbone)
    assert not all(torch.equal(first[k], start[k]) for k in head)
    assert not all(torch.equal(second[k], first[k]) for k in backbone)


# ----------------------------------------------------------------------------- holdout selection


def _records_with_copies(root):
    data = make_dataset(root, per_class=(10, 2))
    n0 = data / "training" / "training" / "n0"
    shutil.copy(n0 / "n0t000.jpg", n0 / "n0t000_copy.jpg")  # an exact duplicate within a class
    shutil.copy(n0 / "n0t001.jpg", data / "training" / "training" / "n1" / "n1t_from_n0.jpg")  # across classes
    layout = locate(data)
    return [r for r in scan(layout, list_files(layout), 10**8, 1, False) if r.ok and r.split == "training"]


def test_holdout_split_is_stratified_keeps_duplicates_together_and_repeats(tmp_path):
    records = _records_with_copies(tmp_path / "d")
    held = holdout_split(records, 0.3, seed=7, near_distance=10)
    assert held == holdout_split(records, 0.3, seed=7, near_distance=10)  # the same on every rerun
    assert held != holdout_split(records, 0.3, seed=8, near_distance=10)
    counts = Counter(r.code for r in records)
    held_counts = Counter(r.code for r in records if r.relpath in set(held))
    assert held_counts == {c: round(0.3 * n) for c, n in counts.items()}  # per class
    groups = find_duplicates(records, 10)["groups"]
    assert any(len(g["files"]) >= 2 for g in groups)
    for group in groups:
        sides = {f["file"] in set(held) for f in group["files"]}
        assert len(sides) == 1, group  # never straddling training and holdout
    assert len(set(held)) == len(held) and set(held) <= {r.relpath for r in records}


def test_holdout_run_selects_the_best_held_out_epoch(tmp_path):
    data = make_dataset(tmp_path / "d", per_class=(10, 4))
    frozen = {"name": "frozen", "architecture": "vanilla_cnn", "frozen": True}
    cfg = load_config(write_config(tmp_path, [VANILLA | {"freeze_epochs": 1}, frozen], data, epochs=3,
                                   selection="holdout", holdout_fraction=0.2, learning_rate=0.01))
    results = train_all(cfg, show_progress=False)
    for result in results:
        m = result.metrics
        history = read_csv(result.run_dir / "history.csv")
        accuracy = [float(h["val_accuracy"]) for h in history]
        assert m["selection"] == {"mode": "holdout", "epoch": int(np.argmax(accuracy)) + 1, "n_holdout": 6,
                                  "checkpoint": "checkpoints/best.ckpt"}
        assert m["n_train"] == 24 and m["n_val"] == 12 and m["epochs"] == 3
        assert (result.run_dir / "checkpoints" / "best.ckpt").is_file()
        assert (result.run_dir / "checkpoints" / "last.ckpt").is_file()
        rows = read_csv(result.run_dir / "predictions.csv")
        layout = locate(data)
        assert sorted(r["file"] for r in rows) == sorted(
            f.relpath for f in list_files(layout) if f.split == "validation")
        assert m["accuracy"] == pytest.approx(np.mean([r["true_class"] == r["predicted_class"] for r in rows]))
    assert results[0].metrics["recipe"] == {"freeze_epochs": 1, "selection": "holdout", "holdout_fraction": 0.2}
    fine = results[0].run_dir
    written = np.array([[float(v) for k, v in r.items() if k.startswith("prob_")]
                        for r in read_csv(fine / "predictions.csv")])
    assert np.allclose(written, _probabilities(fine / "checkpoints" / "best.ckpt", data), atol=1e-5)
    (again,) = train_all(cfg, only=["vanilla"], show_progress=False)
    assert again.skipped


def _probabilities(checkpoint, data) -> np.ndarray:
    """Softmax outputs on the validation images of the vanilla CNN in `checkpoint`, in file order."""
    created = create("vanilla_cnn", 3)
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    created.model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    layout = locate(data)
    records = scan(layout, list_files(layout), 10**8, 1, False)
    prep = Preprocessing(40, 32, created.mean, created.std)
    images = MonkeyDataModule([], select_samples(layout, records, "validation"), prep, 4, 0, 10**8)
    images.setup()
    model = created.model.eval()
    with torch.no_grad():
        return torch.cat([torch.softmax(model(prep.normalize(x)), dim=1)
                          for x, _, _ in images.predict_dataloader()[0]]).numpy()
