import dataclasses
import os

import numpy as np
import pytest

from monkeyreport.config import load_config
from monkeyreport.data import fingerprint, list_files, locate, probe_all
from monkeyreport.datamodule import Preprocessing, image_cache, select_samples
from monkeyreport.training import train_all

from conftest import make_dataset, noise_image
from test_training import read_csv, write_config

STATS = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def with_training(cfg, **changes):
    return dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, **changes))


@pytest.mark.parametrize("architecture", ["alexnet", "resnet34"])  # AlexNet's head has dropout
def test_feature_cache_gives_the_same_result_as_the_full_network(tmp_path, architecture):
    data = make_dataset(tmp_path / "d", per_class=(10, 4))
    frozen = {"name": "frozen", "architecture": architecture, "frozen": True}
    base = load_config(write_config(tmp_path, [frozen], data, epochs=3, batch_size=4, resize=72, crop=64))
    base = dataclasses.replace(base, trainer=dataclasses.replace(base.trainer, memory_format="contiguous"))
    # The plain path decodes in persistent worker processes, as the offline profile does.
    plain = with_training(base, feature_cache=False, image_cache=False, num_workers=2)
    plain = dataclasses.replace(plain, output=dataclasses.replace(plain.output, runs_dir=str(tmp_path / "plain")))
    (full,) = train_all(plain, show_progress=False)
    (cached,) = train_all(base, show_progress=False)
    assert full.metrics["params_trainable"] == cached.metrics["params_trainable"]
    for key in ("accuracy", "macro_f1"):
        assert cached.metrics[key] == pytest.approx(full.metrics[key], abs=1e-4)
    assert cached.metrics["confusion_matrix"] == full.metrics["confusion_matrix"]
    for a, b in zip(read_csv(full.run_dir / "history.csv"), read_csv(cached.run_dir / "history.csv")):
        for column in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1"):
            assert float(b[column]) == pytest.approx(float(a[column]), abs=1e-4)
    probs_full = [[float(v) for k, v in r.items() if k.startswith("prob_")] for r in read_csv(full.run_dir / "predictions.csv")]
    probs_cached = [[float(v) for k, v in r.items() if k.startswith("prob_")] for r in read_csv(cached.run_dir / "predictions.csv")]
    assert np.allclose(probs_full, probs_cached, atol=1e-4)


def test_image_cache_does_not_change_what_fine_tuning_learns(tmp_path):
    data = make_dataset(tmp_path / "d", per_class=(8, 4))
    base = load_config(write_config(tmp_path, [{"name": "v", "architecture": "vanilla_cnn"}], data,
                                    epochs=2, batch_size=4))
    # One layout for both: each runs folder measuring its own could choose differently.
    base = dataclasses.replace(base, trainer=dataclasses.replace(base.trainer, memory_format="contiguous"))
    plain = with_training(base, image_cache=False, num_workers=2)
    plain = dataclasses.replace(plain, output=dataclasses.replace(plain.output, runs_dir=str(tmp_path / "plain")))
    (decoded,) = train_all(plain, show_progress=False)
    (cached,) = train_all(base, show_progress=False)
    assert list((cached.run_dir.parent / "cache").glob("images-*.u8"))
    assert not list((decoded.run_dir.parent / "cache").glob("images-*"))
    assert cached.metrics["confusion_matrix"] == decoded.metrics["confusion_matrix"]
    for a, b in zip(read_csv(decoded.run_dir / "history.csv"), read_csv(cached.run_dir / "history.csv")):
        assert float(b["train_loss"]) == pytest.approx(float(a["train_loss"]), abs=1e-5)


def _cache(root, tmp_path, resize=40, crop=32):
    layout = locate(root)
    entries = list_files(layout)
    records = probe_all(entries, 10**7, workers=1)
    samples = select_samples(layout, records, "training")
    array = image_cache(samples, Preprocessing(resize, crop, *STATS), tmp_path / "cache",
                        fingerprint(layout, entries), 10**7, num_workers=0)
    return array, samples


def test_image_cache_is_reused_when_unchanged_and_rebuilt_when_anything_changes(tmp_path):
    root = make_dataset(tmp_path / "d")
    first, samples = _cache(root, tmp_path)
    assert first.shape == (12, 3, 32, 32) and first.dtype == np.uint8
    path = first.filename
    stamp = os.stat(path).st_mtime_ns
    again, _ = _cache(root, tmp_path)
    assert again.filename == path and os.stat(path).st_mtime_ns == stamp
    assert np.array_equal(again, first)

    other_crop, _ = _cache(root, tmp_path, crop=24)
    assert other_crop.filename != path and other_crop.shape[-1] == 24

    noise_image(999).save(samples[0].path)  # change one image
    changed, _ = _cache(root, tmp_path)
    assert changed.filename != path
    assert not np.array_equal(changed[0], first[0]) and np.array_equal(changed[1:], first[1:])


def test_cached_crops_equal_decoding_every_time(tmp_path):
    from monkeyreport.datamodule import DecodedImages

    root = make_dataset(tmp_path / "d")
    cached, samples = _cache(root, tmp_path)
    decoded = DecodedImages(samples, Preprocessing(40, 32, *STATS), 10**7)
    for i in range(len(samples)):
        assert np.array_equal(decoded[i][0].numpy(), cached[i])
