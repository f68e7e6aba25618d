"""One build at a time per runs folder.

Two `build` or `train` commands on the same runs folder would train the same experiments
twice and race on their files. The first takes an OS file lock (filelock: flock on POSIX),
which the kernel releases when its process ends however it ends, so a killed build never
leaves a lock behind. A second one waits for it, saying whose lock it waits for, or with
`wait=False` stops with one line.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock, Timeout

from monkeyreport import results
from monkeyreport.errors import MonkeyReportError

LOCK_NAME = ".monkeyreport.lock"
HOLDER_NAME = ".monkeyreport.lock.json"  # who holds the lock, for the waiting message


def _holder(folder: Path) -> str:
    info = results.read_json_if_exists(folder / HOLDER_NAME)
    if not isinstance(info, dict):
        return "another monkeyreport process"
    return f"monkeyreport process {info.get('pid')} ({info.get('command')}, since {info.get('started')})"


@contextlib.contextmanager
def exclusive(folder: Path, wait: bool = True, echo: Callable[[str], None] = print) -> Iterator[None]:
    """Hold the lock of `folder` for the duration of the block."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MonkeyReportError(f"{folder}: cannot write output ({exc.strerror})") from None
    lock = FileLock(folder / LOCK_NAME)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = _holder(folder)
        if not wait:
            raise MonkeyReportError(f"{folder}: in use by {holder}; wait for it to finish, "
                                    "or run without --no-wait to queue behind it") from None
        echo(f"waiting for {holder} to finish with {folder} ...")
        start = time.perf_counter()
        lock.acquire()
        echo(f"... it finished; going on after {time.perf_counter() - start:.0f} s")
    try:
        results.write_json(folder / HOLDER_NAME, {
            "pid": os.getpid(), "command": " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv)),
            "started": datetime.now().isoformat(timespec="seconds")})
        yield
    finally:
        (folder / HOLDER_NAME).unlink(missing_ok=True)
        lock.release()
