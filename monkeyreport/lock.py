"""Who may use a runs folder at once: every worker of one config, no two configs.

Workers of the same config share a runs folder: each takes runs from it as from a work
queue (work_queue.py). Builds of two different configs on one folder would overwrite each
other's runs and report, so the second one waits for the first, saying whose lock it waits
for, or with `wait=False` stops with one line.

Each worker holds an OS file lock (filelock: flock on POSIX) on a file of its own,
`.monkeyreport.<config key>.<host>-<pid>.lock`, for as long as it works; the kernel releases
it when its process ends however it ends, so a killed worker never leaves a lock behind. A
worker starting looks, under a short-lived gate lock, for a held lock of another config.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock, Timeout

from monkeyreport import results
from monkeyreport.errors import MonkeyReportError

GATE_NAME = ".monkeyreport.lock"  # held only while a worker checks for other configs
PREFIX = ".monkeyreport."
POLL_SECONDS = 1.0


def worker_id() -> str:
    """This process among all that may share a folder (several machines included)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _holder(lock_file: Path) -> str:
    info = results.read_json_if_exists(lock_file.with_suffix(".json"))
    if not isinstance(info, dict):
        return "another monkeyreport process"
    return (f"monkeyreport process {info.get('pid')} on {info.get('host')} "
            f"({info.get('command')}, since {info.get('started')})")


def _held(lock_file: Path) -> bool:
    """Whether a live process holds `lock_file` (we can take it without waiting otherwise)."""
    probe = FileLock(lock_file)
    try:
        probe.acquire(timeout=0)
    except Timeout:
        return True
    probe.release()
    return False


def _other_config(folder: Path, key: str) -> Path | None:
    """A lock of another config held by a live worker; free ones are removed (with their note)."""
    for lock_file in sorted(folder.glob(f"{PREFIX}*.lock")):
        if lock_file.name == GATE_NAME or lock_file.name.startswith(f"{PREFIX}{key}."):
            continue
        if _held(lock_file):
            return lock_file
        lock_file.with_suffix(".json").unlink(missing_ok=True)
        lock_file.unlink(missing_ok=True)
    return None


@contextlib.contextmanager
def for_config(folder: Path, key: str, wait: bool = True, echo: Callable[[str], None] = print) -> Iterator[None]:
    """Work in `folder` for the config whose key is `key`, beside other workers of that config,
    for the duration of the block."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MonkeyReportError(f"{folder}: cannot write output ({exc.strerror})") from None
    mine = FileLock(folder / f"{PREFIX}{key}.{worker_id()}.lock")
    waited_since: float | None = None
    while True:
        with FileLock(folder / GATE_NAME):
            other = _other_config(folder, key)
            if other is None:
                mine.acquire()
                break
        if not wait:
            raise MonkeyReportError(f"{folder}: in use by {_holder(other)} with another config; wait for it "
                                    "to finish, or run without --no-wait to queue behind it")
        if waited_since is None:
            echo(f"waiting for {_holder(other)} to finish with {folder} ...")
            waited_since = time.perf_counter()
        time.sleep(POLL_SECONDS)
    if waited_since is not None:
        echo(f"... it finished; going on after {time.perf_counter() - waited_since:.0f} s")
    note = Path(mine.lock_file).with_suffix(".json")
    try:
        results.write_json(note, {
            "pid": os.getpid(), "host": socket.gethostname(),
            "command": " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv)),
            "started": datetime.now().isoformat(timespec="seconds")})
        yield
    finally:
        note.unlink(missing_ok=True)
        mine.release()
        Path(mine.lock_file).unlink(missing_ok=True)
