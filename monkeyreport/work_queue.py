"""The runs folder as a work queue shared by any number of workers.

A worker is one `train` or `build` process (or one group of processes training together,
see below). Workers started on the same config and runs folder, on one machine or on several
that share a file system, each take the next run that is neither finished nor held by
another worker, train it, and go on until none is left. A run is held by an OS file lock,
`runs/.claims/<run>.lock` (filelock: flock on POSIX), which the kernel frees when its holder
dies however it dies; the next worker to look takes the run over and resumes it from its
checkpoint.

A worker leaves when every run left is held by others; the last one to finish sees every run
finished and goes on to the stages after training (build.py).

Several processes training each run together (Lightning DDP: `[trainer] devices`,
`num_nodes`) form one worker: global rank 0 claims runs and publishes each one it trains in
`runs/.claims/group-<group>.json`; the other ranks train the published runs in the same
order, which every collective of Lightning needs. `group_key` names a group the same way in
all of its processes.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from monkeyreport import results
from monkeyreport.lock import worker_id

CLAIMS = ".claims"
POLL_SECONDS = 0.2
# Variables that name one group of processes launched together, in every one of them.
GROUP_VARIABLES = ("MONKEYREPORT_GROUP", "TORCHELASTIC_RUN_ID")


@dataclass
class WorkQueue:
    """This worker's view of the runs folder's queue."""

    runs_dir: Path
    started: float  # when this worker started (see `written_since_start`)

    @property
    def folder(self) -> Path:
        return self.runs_dir / CLAIMS

    @contextlib.contextmanager
    def claim(self, name: str) -> Iterator[bool]:
        """Hold run `name` for the block if no other worker holds it; yields whether it does."""
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.folder / f"{name}.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    def written_since_start(self, path: Path) -> bool:
        """Whether `path` was written after this worker started: by another worker, as this
        one writes a run's files only while holding it."""
        try:
            return path.stat().st_mtime >= self.started
        except OSError:
            return False


def group_key() -> str:
    """The name of this process's group of training processes. Rank 0 of a group that
    Lightning launches sets it before the others start, and they inherit it; under torchrun
    and SLURM every process has it from the launcher."""
    for name in GROUP_VARIABLES:
        if os.environ.get(name):
            return os.environ[name]
    if os.environ.get("SLURM_JOB_ID"):
        return f"slurm-{os.environ['SLURM_JOB_ID']}-{os.environ.get('SLURM_STEP_ID', '0')}"
    os.environ[GROUP_VARIABLES[0]] = worker_id()
    return os.environ[GROUP_VARIABLES[0]]


@dataclass
class Group:
    """The runs rank 0 of a group trains, in order, for the group's other ranks."""

    queue: WorkQueue
    key: str

    @property
    def path(self) -> Path:
        return self.queue.folder / f"group-{self.key}.json"

    def publish(self, names: list[str], done: bool) -> None:
        self.queue.folder.mkdir(parents=True, exist_ok=True)
        results.write_json(self.path, {"runs": names, "done": done})

    def follow(self) -> Iterator[str]:
        """The runs rank 0 publishes, each once it is published, until it says it is done."""
        position = 0
        while True:
            published = results.read_json_if_exists(self.path) or {}
            names = list(published.get("runs", []))
            if position < len(names):
                yield names[position]
                position += 1
            elif published.get("done"):
                return
            else:
                time.sleep(POLL_SECONDS)
