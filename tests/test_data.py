from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monkeyreport.data import (
    FileEntry,
    load_rgb,
    locate,
    list_files,
    probe,
    probe_all,
    read_labels,
)
from monkeyreport.errors import DataError

from conftest import LABELS_TEXT, make_dataset, noise_image

LIMIT = 4_000_000


def entry(path: Path) -> FileEntry:
    return FileEntry("training", "n0", path, path.name)


def jpeg_bytes(image: Image.Image, **kw) -> bytes:
    import io
    buf = io.BytesIO()
    image.save(buf, format="JPEG", **kw)
    return buf.getvalue()


def test_labels_file_as_shipped_is_parsed(tmp_path):
    path = tmp_path / "monkey_labels.txt"
    path.write_bytes(LABELS_TEXT.encode())
    labels = read_labels(path)
    assert list(labels) == ["n0", "n1", "n2"]
    assert labels["n0"].latin_name == "alouatta_palliata"
    assert labels["n0"].common_name == "mantled_howler"
    assert labels["n0"].display_name == "Alouatta palliata"


def test_real_labels_file(shared_dataset):
    labels = read_labels(shared_dataset / "monkey_labels.txt")
    assert len(labels) == 10
    assert labels["n9"].display_name == "Trachypithecus johnii"


def test_malformed_labels_fall_back_to_folder_names(tmp_path):
    root = make_dataset(tmp_path / "d")
    (root / "monkey_labels.txt").write_text("Label, Latin\nn0 only-one-cell\n")
    layout = locate(root)
    assert [c.display_name for c in layout.classes] == ["n0", "n1", "n2"]
    assert any(p.kind == "labels_file_ignored" and "line 2" in p.message for p in layout.problems)


@pytest.mark.parametrize("doubled", [True, False])
def test_both_kaggle_layouts(tmp_path, doubled):
    root = make_dataset(tmp_path / "d", doubled=doubled)
    layout = locate(root)
    assert layout.class_codes == ["n0", "n1", "n2"]
    assert layout.split_dirs["training"].name == "training"
    assert len(list_files(layout)) == 3 * 4 + 3 * 2


def test_without_labels_file_classes_are_folder_names(tmp_path):
    layout = locate(make_dataset(tmp_path / "d", labels=False))
    assert [c.display_name for c in layout.classes] == ["n0", "n1", "n2"]
    assert [p.kind for p in layout.problems] == ["no_labels_file"]


def test_missing_root_and_missing_split_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist.*data download"):
        locate(tmp_path / "nowhere")
    (tmp_path / "d" / "training" / "n0").mkdir(parents=True)
    with pytest.raises(DataError, match="no 'validation' split"):
        locate(tmp_path / "d")


def test_class_missing_from_a_split_is_reported(tmp_path):
    root = make_dataset(tmp_path / "d")
    for f in (root / "validation" / "validation" / "n2").iterdir():
        f.unlink()
    (root / "validation" / "validation" / "n2").rmdir()
    layout = locate(root)
    (problem,) = layout.problems
    assert (problem.kind, problem.code, problem.split) == ("class_missing_from_split", "n2", "validation")
    assert problem.message == "class folder 'n2' is missing from the validation split"


# ----------------------------------------------------------------- probing by content

def _make(folder: Path, name: str, writer) -> Path:
    path = folder / name
    writer(path)
    return path


BAD_FILES = {
    "truncated.jpg": (lambda p: p.write_bytes(jpeg_bytes(noise_image(1, (300, 200)))[:1500]),
                      "corrupt", "cannot be decoded: image file is truncated"),
    "zero.jpg": (lambda p: p.write_bytes(b""), "empty", "empty file (0 bytes)"),
    "notes.jpg": (lambda p: p.write_text("these are not pixels\n"), "not_image",
                  "not an image (content not recognised)"),
    "huge.png": (lambda p: Image.new("1", (3000, 2000)).save(p), "too_large", "exceed the safety limit"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_unusable_files_are_skipped_with_reason(tmp_path, name):
    writer, kind, reason = BAD_FILES[name]
    record = probe(entry(_make(tmp_path, name, writer)), LIMIT)
    assert not record.ok
    assert record.error_kind == kind
    assert reason in record.error


USABLE_FILES = {
    "noext": (lambda p: noise_image(2).save(p, format="JPEG"), "JPEG", "RGB", "no file extension (content is JPEG)"),
    "plain.png": (lambda p: noise_image(3).save(p), "PNG", "RGB", ""),
    "png_named.jpg": (lambda p: noise_image(4).save(p, format="PNG"), "PNG", "RGB",
                      "extension '.jpg' but content is PNG"),
    "gray.jpg": (lambda p: noise_image(5, mode="L").save(p), "JPEG", "L", ""),
    "cmyk.jpg": (lambda p: noise_image(6, mode="CMYK").save(p), "JPEG", "CMYK", ""),
    "rgba.png": (lambda p: noise_image(7, mode="RGBA").save(p), "PNG", "RGBA", ""),
    "palette.png": (lambda p: noise_image(8).convert("P").save(p, transparency=0), "PNG", "P", ""),
    "deep.png": (lambda p: Image.fromarray((np.arange(96 * 64).reshape(64, 96) * 10).astype(np.uint16)).save(p),
                 "PNG", "I;16", ""),
    "camera.jpg": (lambda p: noise_image(9).save(p, format="MPO", save_all=True,
                                                 append_images=[noise_image(10)]),
                   "MPO", "RGB", "multi-picture JPEG (MPO, 2 frames); first frame used"),
}


@pytest.mark.parametrize("name", sorted(USABLE_FILES))
def test_usable_files_are_identified_by_content(tmp_path, name):
    writer, fmt, mode, odd = USABLE_FILES[name]
    path = _make(tmp_path, name, writer)
    record = probe(entry(path), LIMIT)
    assert record.ok, record.error
    assert (record.format, record.mode) == (fmt, mode)
    assert record.odd_reason == odd
    image = load_rgb(path)
    assert image.mode == "RGB" and image.size == (96, 64)


def test_transparency_is_flattened_onto_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(path)
    assert load_rgb(path).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    noise_image(11, (120, 80)).save(path, exif=exif)
    record = probe(entry(path), LIMIT)
    assert (record.width, record.height) == (80, 120)
    assert load_rgb(path).size == (80, 120)


def test_large_jpeg_is_decoded_at_reduced_scale(tmp_path):
    path = tmp_path / "big.jpg"
    noise_image(12, (2400, 1600)).save(path)
    image = load_rgb(path, min_size=256, max_pixels=LIMIT)
    assert image.size == (600, 400)  # 1/4 scale: the smallest whose short side stays >= 256


def test_load_rgb_names_the_file_when_it_fails(tmp_path):
    path = tmp_path / "bad.jpg"
    path.write_text("nope")
    with pytest.raises(DataError, match="bad.jpg"):
        load_rgb(path)


def test_parallel_probe_matches_serial(shared_dataset):
    entries = list_files(locate(shared_dataset))[:120]
    assert probe_all(entries, LIMIT, workers=2) == probe_all(entries, LIMIT, workers=1)


def test_truncated_image_stays_an_error_after_weasyprint_is_imported(tmp_path):
    """WeasyPrint turns on PIL's process-wide LOAD_TRUNCATED_IMAGES when imported (render
    does that); decoding for the dataset must still refuse a cut-short file."""
    import weasyprint  # noqa: F401
    from PIL import ImageFile

    assert ImageFile.LOAD_TRUNCATED_IMAGES
    path = tmp_path / "cut.jpg"
    path.write_bytes(jpeg_bytes(noise_image(1, (300, 200)))[:1500])
    with pytest.raises(DataError, match="truncated"):
        load_rgb(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES  # left as WeasyPrint wants it
