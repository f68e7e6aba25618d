"""`--jobs N`: N workers of the runs folder's queue (work_queue.py) on this machine.

Each worker is a `monkeyreport train` process of its own. With GPUs each one sees one device
(`CUDA_VISIBLE_DEVICES`, round robin over the visible ones); on a CPU each one computes with
cores / N threads, so that N workers together use the machine as one did.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import Callable


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as `CUDA_VISIBLE_DEVICES` names them."""
    import torch

    count = torch.cuda.device_count()
    listed = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[:count] if listed else [str(i) for i in range(count)]


def worker_environment(index: int, jobs: int, gpus: list[str], cores: int) -> dict[str, str]:
    """The environment of worker `index` of `jobs`: its GPU, or its share of the CPU cores."""
    env = dict(os.environ)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    else:
        threads = str(max(1, cores // jobs))
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = threads
    return env


def run_workers(arguments: list[str], jobs: int, echo: Callable[[str], None]) -> int:
    """Run `monkeyreport train <arguments>` as `jobs` workers and wait for all of them,
    passing each one's lines on prefixed with its number; the number of workers that failed."""
    gpus = visible_gpus()
    command = [sys.executable, "-m", "monkeyreport", "train", *arguments]
    processes = [subprocess.Popen(command, env=worker_environment(i, jobs, gpus, os.cpu_count() or 1),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
                 for i in range(jobs)]
    lock = threading.Lock()

    def relay(index: int, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with lock:
                echo(f"[worker {index + 1}] {line.rstrip()}")

    relays = [threading.Thread(target=relay, args=(i, p), daemon=True) for i, p in enumerate(processes)]
    for thread in relays:
        thread.start()
    try:
        codes = [process.wait() for process in processes]
    finally:
        for process in processes:  # Ctrl-C reaches the workers too; do not leave one behind
            if process.poll() is None:
                process.terminate()
        for thread in relays:
            thread.join(timeout=5)
    return sum(1 for code in codes if code != 0)
