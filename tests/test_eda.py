import shutil
import time
from pathlib import Path

from PIL import Image

from monkeyreport.config import Config, load_config
from monkeyreport.eda import FIGURES, run_eda

from conftest import REPO, make_dataset, noise_image


def config_for(data: Path, out: Path) -> Config:
    cfg = load_config(REPO / "configs" / "monkeyreport.toml").with_overrides(data_dir=data, out=out)
    return cfg


def test_shared_dataset_counts_duplicates_figures_and_skip(shared_dataset, tmp_path):
    cfg = config_for(shared_dataset, tmp_path / "report")
    start = time.perf_counter()
    first = run_eda(cfg, show_progress=False)
    elapsed = time.perf_counter() - start
    s = first.summary
    assert not first.skipped
    print(f"EDA of the shared dataset: {elapsed:.1f} s")  # a benchmark figure, not an assertion
    assert s["splits"]["training"]["total"] == 1098
    assert s["splits"]["validation"]["total"] == 272
    assert s["splits"]["training"]["per_class"]["n3"] == 122
    assert s["splits"]["validation"]["per_class"]["n3"] == 30
    assert sum(s["splits"]["training"]["per_class"].values()) == 1098
    assert [c["display_name"] for c in s["classes"]][:2] == ["Alouatta palliata", "Erythrocebus patas"]
    assert {o["file"] for o in s["odd_files"]} == {"training/training/n9/n9151jpg",
                                                  "training/training/n9/n9160.png"}
    dup = s["duplicates"]
    cross = [g for g in dup["groups"] if g["cross_split"]]
    assert dup["n_cross_split_groups"] == len(cross) > 0
    assert all({f["split"] for f in g["files"]} == {"training", "validation"} for g in cross)
    assert dup["n_exact_groups"] > 0
    for rel in FIGURES.values():
        with Image.open(cfg.report_dir / rel) as image:
            assert image.width > 1000
    second = run_eda(cfg, show_progress=False)
    assert second.skipped
    assert second.summary == s


def test_bad_files_are_used_or_listed_and_run_completes(tmp_path):
    root = make_dataset(tmp_path / "d")
    folder = root / "training" / "training" / "n1"
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("hello")
    good = (folder / "n1t000.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(good[: len(good) // 2])
    Image.new("1", (9000, 8000)).save(folder / "huge.png")
    noise_image(100).save(folder / "noext", format="JPEG")
    noise_image(101, mode="CMYK").save(folder / "cmyk.jpg")
    noise_image(102, mode="RGBA").save(folder / "rgba.png")
    noise_image(103, mode="L").save(folder / "gray.jpg")
    cfg = config_for(root, tmp_path / "report")
    s = run_eda(cfg, show_progress=False).summary
    reasons = {Path(u["file"]).name: u["reason"] for u in s["unreadable"]}
    assert set(reasons) == {"zero.jpg", "text.jpg", "cut.jpg", "huge.png"}
    assert "safety limit" in reasons["huge.png"]
    assert s["splits"]["training"]["per_class"]["n1"] == 4 + 4
    kinds = {Path(u["file"]).name: u["kind"] for u in s["unreadable"]}
    assert kinds == {"zero.jpg": "empty", "text.jpg": "not_image", "cut.jpg": "corrupt", "huge.png": "too_large"}
    odd = {Path(o["file"]).name: o["issues"] for o in s["odd_files"]}
    assert odd == {"noext": ["no_extension"], "rgba.png": ["minority_format"]}
    assert s["modes"]["CMYK"] == 1 and s["modes"]["L"] == 1


def test_cross_split_duplicates_are_found(tmp_path):
    root = make_dataset(tmp_path / "d")
    train = root / "training" / "training" / "n0"
    val = root / "validation" / "validation" / "n0"
    shutil.copy(train / "n0t000.jpg", val / "copy.jpg")
    with Image.open(train / "n0t001.jpg") as image:
        image.resize((80, 53)).save(val / "smaller.jpg", quality=70)
    s = run_eda(config_for(root, tmp_path / "r"), show_progress=False).summary
    dup = s["duplicates"]
    kinds = sorted(g["kind"] for g in dup["groups"])
    assert kinds == ["exact", "near"]
    assert dup["n_cross_split_groups"] == 2
    assert dup["n_validation_files_in_cross_split_groups"] == 2


def test_rerun_when_data_or_settings_change(tmp_path):
    root = make_dataset(tmp_path / "d")
    cfg = config_for(root, tmp_path / "r")
    assert not run_eda(cfg, show_progress=False).skipped
    assert run_eda(cfg, show_progress=False).skipped
    assert not run_eda(cfg, force=True, show_progress=False).skipped
    noise_image(500).save(root / "validation" / "validation" / "n2" / "new.jpg")
    changed = run_eda(cfg, show_progress=False)
    assert not changed.skipped and changed.summary["splits"]["validation"]["total"] == 7
    (cfg.report_dir / FIGURES["sample_grid"]).unlink()
    assert not run_eda(cfg, show_progress=False).skipped
