"""Bad input of every kind: each is used, skipped with its reason, or stops with one line."""

import errno
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monkeyreport import results
from monkeyreport.config import load_config
from monkeyreport.data import FileEntry, locate, probe
from monkeyreport.eda import run_eda
from monkeyreport.results import EdaSummary
from monkeyreport.errors import DataError, MonkeyReportError

from conftest import REPO, make_dataset, noise_image


def eda_on(root: Path, out: Path) -> EdaSummary:
    cfg = load_config(REPO / "configs" / "monkeyreport.toml").with_overrides(data_dir=root, out=out)
    return run_eda(cfg, show_progress=False)


def test_every_odd_mode_is_used_as_rgb(tmp_path):
    root = make_dataset(tmp_path / "d")
    folder = root / "training" / "training" / "n0"
    for mode in ("L", "LA", "P", "RGBA", "CMYK"):
        noise_image(ord(mode[0]) * 7 + len(mode), mode=mode).save(folder / f"mode_{mode}.{'jpg' if mode in ('L', 'CMYK') else 'png'}")
    Image.fromarray((np.arange(96 * 64).reshape(64, 96) * 10).astype(np.uint16)).save(folder / "mode_I16.png")
    s = eda_on(root, tmp_path / "r")
    assert s.unreadable == []
    assert s.splits["training"]["per_class"]["n0"] == 4 + 6
    assert {"L", "LA", "P", "RGBA", "CMYK", "I;16"} <= set(s.modes)


def test_symlink_loop_is_skipped_with_its_reason(tmp_path):
    root = make_dataset(tmp_path / "d")
    folder = root / "training" / "training" / "n1"
    os.symlink("loop_b.jpg", folder / "loop_a.jpg")
    os.symlink("loop_a.jpg", folder / "loop_b.jpg")
    s = eda_on(root, tmp_path / "r")
    reasons = {Path(u["file"]).name: (u["kind"], u["reason"]) for u in s.unreadable}
    assert reasons["loop_a.jpg"] == ("unreadable", "cannot be read: too many levels of symbolic links")
    assert s.splits["training"]["per_class"]["n1"] == 4


def test_file_without_read_permission_is_skipped(tmp_path, monkeypatch):
    path = tmp_path / "secret.jpg"
    noise_image(1).save(path)
    real = Path.read_bytes

    def denied(self):
        if self == path:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    record = probe(FileEntry("training", "n0", path, "secret.jpg"), 10**7)
    assert (record.error_kind, record.error) == ("unreadable", "cannot be read: permission denied")


def test_empty_class_folder_and_unlabelled_folder_are_reported(tmp_path):
    root = make_dataset(tmp_path / "d")
    for f in (root / "validation" / "validation" / "n1").iterdir():
        f.unlink()
    extra = root / "training" / "training" / "n7"
    extra.mkdir()
    noise_image(77).save(extra / "a.jpg")
    s = eda_on(root, tmp_path / "r")
    kinds = {(p["kind"], p["class"], p["split"]) for p in s.dataset_problems}
    assert ("class_empty_in_split", "n1", "validation") in kinds
    assert ("class_not_in_labels", "n7", "") in kinds
    assert ("class_missing_from_split", "n7", "validation") in kinds
    assert s.splits["training"]["per_class"]["n7"] == 1


def test_nothing_readable_stops_with_one_line(tmp_path):
    root = make_dataset(tmp_path / "d")
    for f in root.rglob("*.jpg"):
        f.write_bytes(b"")
    with pytest.raises(DataError, match=r"no readable images among 18 files"):
        eda_on(root, tmp_path / "r")


def test_wrong_layout_stops_with_one_line(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    noise_image(1).save(root / "a.jpg")
    with pytest.raises(DataError, match="no 'training' split with class folders"):
        locate(root)


def test_unwritable_output_is_a_clear_error_and_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "out" / "metrics.json"
    results.write_json(target, {"v": 1})

    def disk_full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(MonkeyReportError, match=r"metrics.json: cannot write output \(No space left on device\)"):
        results.write_json(target, {"v": 2})
    assert results.read_json(target) == {"v": 1}
    assert [p.name for p in target.parent.iterdir()] == ["metrics.json"]  # no temporary left behind


def test_output_folder_that_is_a_file_is_a_clear_error(tmp_path):
    root = make_dataset(tmp_path / "d")
    blocker = tmp_path / "report"
    blocker.write_text("not a folder")
    with pytest.raises(MonkeyReportError, match="cannot write output"):
        eda_on(root, blocker)


def test_names_from_the_dataset_are_escaped_in_html(tmp_path):
    from monkeyreport.pipeline import Options, render_report

    root = make_dataset(tmp_path / "d")
    (root / "training" / "training" / "n0" / "<b>x&y.jpg").write_text("not an image")
    cfg = load_config(REPO / "configs" / "smoke.toml").with_overrides(data_dir=root, out=tmp_path / "r")
    run_eda(cfg, show_progress=False)
    lines: list[str] = []
    rendered = render_report(cfg, Options(fmt="html", templates_dir=REPO / "templates", echo=lines.append))
    assert rendered.ran == ["stats", "figures", "render"], lines
    html = (tmp_path / "r" / "report.html").read_text()
    assert "&lt;b&gt;x&amp;y.jpg" in html and "<b>x&y.jpg" not in html
