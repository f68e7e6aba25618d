"""The dataset layer: find the dataset, read its labels, probe every file by content.

Every later stage reads images through this module. A file is an image when Pillow can
decode it, whatever its name says; files that cannot be used are kept in the scan with the
reason, so the EDA and the report can list them. Only problems that leave nothing sensible
to do (no dataset, no split folders, no images) raise `DataError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import imagehash
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from monkeyreport.errors import DataError

SPLITS = ("training", "validation")
LABEL_FILES = ("monkey_labels.txt", "labels.txt")
EXPECTED_EXTENSIONS = {
    "JPEG": {".jpg", ".jpeg", ".jpe", ".jfif"},
    "MPO": {".jpg", ".jpeg"},
    "PNG": {".png"},
    "GIF": {".gif"},
    "BMP": {".bmp"},
    "TIFF": {".tif", ".tiff"},
    "WEBP": {".webp"},
}
# A multi-picture JPEG (MPO, written by some cameras) decodes like a JPEG; its first frame is used.
HASH_THUMB_SIZE = 64
_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}


@dataclass(frozen=True)
class ClassInfo:
    """One class: its folder code and, when a labels file names it, Latin and common names."""

    code: str
    latin_name: str = ""
    common_name: str = ""

    @property
    def display_name(self) -> str:
        """Latin name as a species is written ('Alouatta palliata'), else the folder code."""
        if not self.latin_name:
            return self.code
        words = self.latin_name.replace("_", " ").split()
        return " ".join([words[0].capitalize(), *words[1:]]) if words else self.code


@dataclass(frozen=True)
class Problem:
    """Something wrong with the dataset that the run works around.

    `kind` is stable and machine-readable (the report words it in Spanish); `message` is
    the English line for the command line.
    """

    kind: str
    message: str
    code: str = ""
    split: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message, "class": self.code, "split": self.split}


@dataclass(frozen=True)
class DatasetLayout:
    """Where the splits and labels of one dataset are, and its classes in index order."""

    root: Path
    split_dirs: dict[str, Path]
    classes: list[ClassInfo]
    labels_file: Path | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def class_codes(self) -> list[str]:
        return [c.code for c in self.classes]


@dataclass(frozen=True)
class FileEntry:
    """A directory entry inside a class folder, before it is probed."""

    split: str
    code: str
    path: Path
    relpath: str


@dataclass(frozen=True)
class ImageRecord:
    """What probing one file found. `error` is set when the file cannot be used."""

    split: str
    code: str
    relpath: str
    extension: str
    size_bytes: int = 0
    format: str = ""
    mode: str = ""
    width: int = 0
    height: int = 0
    frames: int = 1
    sha256: str = ""
    phash: str = ""
    error: str = ""
    error_kind: str = ""  # unreadable | empty | too_large | not_image | corrupt

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def odd_issues(self) -> list[str]:
        """What is unusual about a usable file's name or container (stable kinds)."""
        if not self.ok:
            return []
        issues = []
        if not self.extension:
            issues.append("no_extension")
        elif self.extension.lower() not in EXPECTED_EXTENSIONS.get(self.format, set()):
            issues.append("extension_mismatch")
        if self.format == "MPO":
            issues.append("mpo")
        return issues

    @property
    def odd_reason(self) -> str:
        """The odd issues in English, or ''."""
        words = {
            "no_extension": f"no file extension (content is {self.format})",
            "extension_mismatch": f"extension '{self.extension}' but content is {self.format}",
            "mpo": f"multi-picture JPEG (MPO, {self.frames} frames); first frame used",
        }
        return "; ".join(words[i] for i in self.odd_issues)


# --------------------------------------------------------------------------- layout


def locate(root: Path) -> DatasetLayout:
    """Find the split folders, class folders and labels of the dataset at `root`."""
    if not root.exists():
        raise DataError(
            f"{root}: dataset folder does not exist; run 'monkeyreport data download', "
            "place the Kaggle archive there by hand, or pass --data-dir"
        )
    if not root.is_dir():
        raise DataError(f"{root}: dataset root is not a folder")
    split_dirs = {split: _find_split_dir(root, split) for split in SPLITS}
    problems: list[Problem] = []
    folders = {split: _class_folders(d) for split, d in split_dirs.items()}
    codes = sorted(set().union(*folders.values()), key=_natural_key)
    if not codes:
        raise DataError(f"{root}: no class folders found under {', '.join(map(str, split_dirs.values()))}")
    for split, present in folders.items():
        for code in codes:
            if code not in present:
                problems.append(Problem("class_missing_from_split",
                                        f"class folder '{code}' is missing from the {split} split", code, split))
    labels_file = next((root / n for n in LABEL_FILES if (root / n).is_file()), None)
    labels: dict[str, ClassInfo] = {}
    if labels_file is None:
        problems.append(Problem("no_labels_file",
                                "no labels file (monkey_labels.txt); class names are the folder names"))
    else:
        try:
            labels = read_labels(labels_file)
        except DataError as exc:
            problems.append(Problem("labels_file_ignored", f"labels file ignored: {exc}"))
    if labels:
        for code in codes:
            if code not in labels:
                problems.append(Problem("class_not_in_labels",
                                        f"class folder '{code}' is not in {labels_file.name}; its folder name is used", code))
        for code in labels:
            if code not in codes:
                problems.append(Problem("label_without_folder",
                                        f"{labels_file.name} lists '{code}' but no folder has that name", code))
    classes = [labels.get(code, ClassInfo(code)) for code in codes]
    return DatasetLayout(root, split_dirs, classes, labels_file, problems)


def _find_split_dir(root: Path, split: str) -> Path:
    """Accept both `training/training/n0` (Kaggle archive) and `training/n0`."""
    for candidate in (root / split / split, root / split):
        if candidate.is_dir() and any(p.is_dir() for p in _safe_iterdir(candidate) if p.name != split):
            return candidate
    raise DataError(
        f"{root}: no '{split}' split with class folders "
        f"(expected {split}/n0, ... or {split}/{split}/n0, ...)"
    )


def _class_folders(split_dir: Path) -> set[str]:
    return {p.name for p in _safe_iterdir(split_dir) if p.is_dir() and not p.name.startswith(".")}


def _safe_iterdir(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as exc:
        raise DataError(f"{folder}: cannot list folder ({exc.strerror})") from None


def _natural_key(name: str) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def read_labels(path: Path) -> dict[str, ClassInfo]:
    """Parse the labels table: comma-separated, irregular spaces and tabs, blank lines.

    Only the code, Latin and common name columns are read; the image-count columns of the
    Kaggle file do not match the per-split folders and are ignored on purpose.
    """
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    labels: dict[str, ClassInfo] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        cells = [c.strip() for c in line.split(",")]
        if not any(cells):
            continue
        if cells[0].lower() == "label":
            continue
        if len(cells) < 3 or not cells[0] or not cells[1]:
            raise DataError(f"{path.name} line {lineno}: expected 'code, latin name, common name'")
        labels[cells[0]] = ClassInfo(cells[0], cells[1], cells[2])
    if not labels:
        raise DataError(f"{path.name}: no label rows")
    return labels


def list_files(layout: DatasetLayout) -> list[FileEntry]:
    """Every non-folder entry of every class folder, in a stable order."""
    entries = []
    for split, split_dir in layout.split_dirs.items():
        for code in layout.class_codes:
            folder = split_dir / code
            if not folder.is_dir():
                continue
            for path in _safe_iterdir(folder):
                if path.is_dir():
                    continue
                entries.append(FileEntry(split, code, path, path.relative_to(layout.root).as_posix()))
    return entries


def fingerprint(layout: DatasetLayout, entries: Iterable[FileEntry]) -> str:
    """Hash of names, sizes and modification times: cheap, and changes when any file does."""
    h = hashlib.sha256()
    if layout.labels_file is not None:
        try:
            h.update(layout.labels_file.read_bytes())
        except OSError as exc:
            h.update(f"labels error {exc.errno}".encode())
    for e in entries:
        try:
            st = e.path.stat()
            h.update(f"{e.relpath}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError as exc:
            h.update(f"{e.relpath}\0error {exc.errno}\n".encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- decoding


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB; transparency is flattened onto white."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16"):
        arr = np.asarray(image, dtype=np.float32) / 257.0
        return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode in ("I", "F"):
        arr = np.asarray(image, dtype=np.float32)
        return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _check_pixels(image: Image.Image, max_pixels: int) -> None:
    w, h = image.size
    if w * h > max_pixels:
        raise _Unusable(f"{w}x{h} pixels exceed the safety limit of {max_pixels:,} (data.max_image_pixels)")


class _Unusable(Exception):
    """Internal: an image is too large to decode; the message is the reason shown to the user."""


def _open_checked(source: Path | io.BytesIO, max_pixels: int) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(source)
        except Image.DecompressionBombError as exc:
            raise _Unusable(f"dimensions exceed the safety limit ({exc})") from None
    _check_pixels(image, max_pixels)
    return image


def _decode(image: Image.Image, min_size: int | None) -> Image.Image:
    """Load (at reduced JPEG scale when `min_size` allows), apply EXIF orientation, make RGB."""
    if min_size is not None:
        image.draft("RGB", (min_size, min_size))
    with warnings.catch_warnings(), _truncation_is_an_error():
        warnings.simplefilter("ignore")
        image.load()
        oriented = ImageOps.exif_transpose(image)
    return to_rgb(oriented)


@contextlib.contextmanager
def _truncation_is_an_error() -> Iterator[None]:
    """Importing WeasyPrint sets PIL's process-wide ImageFile.LOAD_TRUNCATED_IMAGES, after
    which a cut-short JPEG decodes silently into grey; here it must stay an error."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def load_rgb(path: Path, min_size: int | None = None, max_pixels: int = 60_000_000) -> Image.Image:
    """Decode one image to RGB with EXIF orientation applied.

    With `min_size`, JPEGs are decoded at the smallest DCT scale whose sides stay at least
    `min_size`: a 5000x3500 photo resized to 256 never needs full resolution.
    Raises `DataError` naming the file when it cannot be decoded.
    """
    try:
        with _open_checked(path, max_pixels) as image:
            return _decode(image, min_size)
    except _Unusable as exc:
        raise DataError(f"{path}: {exc}") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: {_describe_error(exc)}") from None


def probe(entry: FileEntry, max_pixels: int) -> ImageRecord:
    """Identify one file by its content; never raises for a bad file."""
    ext = entry.path.suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,5}", entry.path.suffix) else ""
    base = dict(split=entry.split, code=entry.code, relpath=entry.relpath, extension=ext)
    try:
        data = entry.path.read_bytes()
    except OSError as exc:
        return ImageRecord(**base, error=f"cannot be read: {_describe_error(exc)}", error_kind="unreadable")
    if not data:
        return ImageRecord(**base, error="empty file (0 bytes)", error_kind="empty")
    base.update(size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    try:
        with _open_checked(io.BytesIO(data), max_pixels) as image:
            fmt, mode = image.format or "", image.mode
            frames = getattr(image, "n_frames", 1)
            width, height = image.size
            if image.getexif().get(_EXIF_ORIENTATION) in _TRANSPOSED_ORIENTATIONS:
                width, height = height, width
            thumb = _decode(image, HASH_THUMB_SIZE)
    except _Unusable as exc:
        return ImageRecord(**base, error=str(exc), error_kind="too_large")
    except UnidentifiedImageError:
        return ImageRecord(**base, error="not an image (content not recognised)", error_kind="not_image")
    except (OSError, ValueError, SyntaxError) as exc:
        return ImageRecord(**base, error=f"cannot be decoded: {_describe_error(exc)}", error_kind="corrupt")
    return ImageRecord(
        **base,
        format=fmt,
        mode=mode,
        width=width,
        height=height,
        frames=frames,
        phash=str(imagehash.phash(thumb)),
    )


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _probe_star(args: tuple[FileEntry, int]) -> ImageRecord:
    return probe(*args)


def probe_all(
    entries: list[FileEntry],
    max_pixels: int,
    workers: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[ImageRecord]:
    """Probe every file, in parallel over `workers` processes (0: one per core)."""
    workers = workers or os.cpu_count() or 1
    jobs = [(e, max_pixels) for e in entries]
    if workers == 1 or len(jobs) < 64:
        results = []
        for job in jobs:
            results.append(_probe_star(job))
            if progress:
                progress(1)
        return results
    results = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for record in pool.map(_probe_star, jobs, chunksize=16):
            results.append(record)
            if progress:
                progress(1)
    return results


def scan(layout: DatasetLayout, entries: list[FileEntry], max_pixels: int, workers: int = 0,
         show_progress: bool = True) -> list[ImageRecord]:
    """Probe every file with a progress bar; stop when not a single image is readable."""
    with tqdm(total=len(entries), desc="Probing images", unit="img",
              disable=None if show_progress else True) as bar:
        records = probe_all(entries, max_pixels, workers, bar.update)
    if not any(r.ok for r in records):
        raise DataError(f"{layout.root}: no readable images among {len(records)} files")
    return records


# --------------------------------------------------------------------------- download

KAGGLE_HANDLE = "slothkong/10-monkey-species"
KAGGLE_URL = "https://www.kaggle.com/datasets/slothkong/10-monkey-species"


def download(dest: Path) -> Path:
    """Fetch the Kaggle dataset into `dest` with kagglehub and check that it is usable.

    Any failure (no network, no Kaggle credentials, a partial archive) is one line that
    says how to place the data by hand.
    """
    import kagglehub  # imported here: it is slow to import and only this command needs it

    try:
        path = Path(kagglehub.dataset_download(KAGGLE_HANDLE, output_dir=str(dest)))
    except Exception as exc:  # kagglehub raises many types (HTTP, auth, OS); all mean the same here
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"could not download {KAGGLE_HANDLE} ({type(exc).__name__}: {reason[:160]}); "
            f"download the archive from {KAGGLE_URL} and unpack it into {dest}"
        ) from None
    locate(path)
    return path
