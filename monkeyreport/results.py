"""Results on disk: atomic writes and the readers every stage shares.

Every output goes to a temporary file in the destination folder and is renamed into place,
so an interrupted run leaves either the previous complete file or the new complete file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from monkeyreport.errors import MonkeyReportError

# Version of runs/<experiment>/ results. Bump it when a code change alters what training
# produces for the same config: finished results of an older version are then retrained.
RESULTS_SCHEMA = 2  # 2: data order per epoch from EpochShuffle


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` if the block succeeds."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise MonkeyReportError(f"{path.parent}: cannot write output ({exc.strerror})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs get ordinary permissions
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise MonkeyReportError(f"{path}: cannot write output ({exc.strerror})") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    """Read a results file; a corrupt one is a one-line error naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise MonkeyReportError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None


def read_json_if_exists(path: Path) -> Any | None:
    return read_json(path) if path.is_file() else None
