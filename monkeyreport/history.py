"""The epoch history of a run: one row per finished epoch (history.csv, columns HISTORY_COLUMNS),
kept by a Lightning Callback from what the module logs, and saved in every checkpoint so that
a resumed run keeps the epochs before the interruption."""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from monkeyreport.lit_module import EPOCH_METRICS


class EpochHistory(Callback):
    """Records epoch, the logged `EPOCH_METRICS` and the epoch's seconds (training and
    validation) at the end of each training epoch. The training loss and accuracy are NaN for
    an epoch in which no training step ran (the logged values would be an earlier epoch's).

    Lightning calls it before ModelCheckpoint (checkpoint callbacks run last), so the
    checkpoint of an epoch holds that epoch's row; every process records the same rows, as
    the logged metrics are already reduced over all processes.
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self._epoch_start = 0.0
        self._steps = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.perf_counter()
        self._steps = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._steps += 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logged = trainer.callback_metrics
        row: dict[str, float] = {"epoch": trainer.current_epoch + 1}
        for column, key in EPOCH_METRICS.items():
            row[column] = math.nan if column.startswith("train_") and not self._steps else float(logged[key])
        row["seconds"] = round(time.perf_counter() - self._epoch_start, 3)  # training + validation
        self.rows.append(row)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])
