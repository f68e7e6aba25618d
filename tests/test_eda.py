import dataclasses
import shutil
import time
from pathlib import Path

from PIL import Image

from monkeyreport import pipeline
from monkeyreport.config import Config, load_config
from monkeyreport.eda import FIGURES, run_eda
from monkeyreport.results import EdaSummary, ReportFiles, read_json

from conftest import REPO, make_dataset, noise_image


def config_for(data: Path, out: Path) -> Config:
    cfg = load_config(REPO / "configs" / "monkeyreport.toml").with_overrides(data_dir=data, out=out)
    return cfg


def run_eda_stage(cfg: Config, force: bool = False) -> tuple[pipeline.PipelineOutcome, str]:
    """The eda stage as `monkeyreport eda` runs it: the outcome and its one result line."""
    lines: list[str] = []
    outcome = pipeline.run(cfg, pipeline.Options(force=force, show_progress=False, echo=lines.append), ["eda"])
    assert outcome.lines == lines and len(lines) == 1, lines
    return outcome, lines[0]


def test_shared_dataset_counts_duplicates_figures_and_skip(shared_dataset, tmp_path):
    cfg = config_for(shared_dataset, tmp_path / "report")
    start = time.perf_counter()
    first, line = run_eda_stage(cfg)
    elapsed = time.perf_counter() - start
    assert first.ran == ["eda"] and line.startswith("eda done in "), line
    assert "1098 training, 272 validation images" in line
    s = EdaSummary.read(ReportFiles(cfg.report_dir).eda)
    print(f"EDA of the shared dataset: {elapsed:.1f} s")  # a benchmark figure, not an assertion
    assert s.splits["training"]["total"] == 1098
    assert s.splits["validation"]["total"] == 272
    assert s.splits["training"]["per_class"]["n3"] == 122
    assert s.splits["validation"]["per_class"]["n3"] == 30
    assert sum(s.splits["training"]["per_class"].values()) == 1098
    assert [c["display_name"] for c in s.classes][:2] == ["Alouatta palliata", "Erythrocebus patas"]
    assert {o["file"] for o in s.odd_files} == {"training/training/n9/n9151jpg",
                                                  "training/training/n9/n9160.png"}
    dup = s.duplicates
    cross = [g for g in dup["groups"] if g["cross_split"]]
    assert dup["n_cross_split_groups"] == len(cross) > 0
    assert all({f["split"] for f in g["files"]} == {"training", "validation"} for g in cross)
    assert dup["n_exact_groups"] > 0
    for rel in FIGURES.values():
        with Image.open(cfg.report_dir / rel) as image:  # print resolution, at print size
            assert round(image.info["dpi"][0]) == 200 and image.width > 800
    second, line = run_eda_stage(cfg)
    assert second.ran == [] and line == "eda unchanged, skipped"
    assert EdaSummary.read(ReportFiles(cfg.report_dir).eda) == s


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
    s = run_eda(cfg, show_progress=False)
    reasons = {Path(u["file"]).name: u["reason"] for u in s.unreadable}
    assert set(reasons) == {"zero.jpg", "text.jpg", "cut.jpg", "huge.png"}
    assert "safety limit" in reasons["huge.png"]
    assert s.splits["training"]["per_class"]["n1"] == 4 + 4
    kinds = {Path(u["file"]).name: u["kind"] for u in s.unreadable}
    assert kinds == {"zero.jpg": "empty", "text.jpg": "not_image", "cut.jpg": "corrupt", "huge.png": "too_large"}
    odd = {Path(o["file"]).name: o["issues"] for o in s.odd_files}
    assert odd == {"noext": ["no_extension"], "rgba.png": ["minority_format"]}
    assert s.modes["CMYK"] == 1 and s.modes["L"] == 1


def test_cross_split_duplicates_are_found(tmp_path):
    root = make_dataset(tmp_path / "d")
    train = root / "training" / "training" / "n0"
    val = root / "validation" / "validation" / "n0"
    shutil.copy(train / "n0t000.jpg", val / "copy.jpg")
    with Image.open(train / "n0t001.jpg") as image:
        image.resize((80, 53)).save(val / "smaller.jpg", quality=70)
    s = run_eda(config_for(root, tmp_path / "r"), show_progress=False)
    dup = s.duplicates
    kinds = sorted(g["kind"] for g in dup["groups"])
    assert kinds == ["exact", "near"]
    assert dup["n_cross_split_groups"] == 2
    assert dup["n_validation_files_in_cross_split_groups"] == 2


def test_rerun_when_data_or_settings_change(tmp_path):
    root = make_dataset(tmp_path / "d")
    cfg = config_for(root, tmp_path / "r")
    assert run_eda_stage(cfg)[0].ran == ["eda"]
    assert ReportFiles(cfg.report_dir).stamp("eda").is_file()
    skipped, line = run_eda_stage(cfg)
    assert skipped.ran == [] and line == "eda unchanged, skipped"
    forced, line = run_eda_stage(cfg, force=True)
    assert forced.ran == ["eda"] and line.startswith("eda done in ")
    noise_image(500).save(root / "validation" / "validation" / "n2" / "new.jpg")
    changed, line = run_eda_stage(cfg)
    assert changed.ran == ["eda"] and "12 training, 7 validation images" in line
    assert read_json(ReportFiles(cfg.report_dir).eda)["splits"]["validation"]["total"] == 7
    assert run_eda_stage(cfg)[0].ran == []
    (cfg.report_dir / FIGURES["sample_grid"]).unlink()
    assert run_eda_stage(cfg)[0].ran == ["eda"]
    assert (cfg.report_dir / FIGURES["sample_grid"]).is_file()
    assert run_eda_stage(cfg)[0].ran == []
    stricter = dataclasses.replace(cfg.eda, near_duplicate_distance=cfg.eda.near_duplicate_distance - 1)
    settings = dataclasses.replace(cfg, eda=stricter)
    assert run_eda_stage(settings)[0].ran == ["eda"]
    assert run_eda_stage(settings)[0].ran == []
