"""What training shows on the console, and where the rest of its output goes.

The console gets, per experiment, one progress line (`progress_line`: only when stderr is a
terminal and progress is wanted, so never with --quiet or in a pipe) and then its result
line; besides, one-line `warning: ...` notices (the "monkeyreport" logger, `log`) and the
Python warnings that point at a real problem. Everything Lightning says during an
experiment (device banners, checkpoint restores, its advice) goes to the experiment's
train.log instead (`lightning_output_to`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

import lightning as L
from lightning.fabric.utilities.warnings import PossibleUserWarning
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.trainer.states import TrainerFn
from tqdm import tqdm

# Lightning's own loggers: each has a console handler unless the root logger has one.
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")
# Lightning advice this toolkit follows on purpose (a resume writes into its own checkpoint
# folder), kept in the log only; so is every PossibleUserWarning (few loader workers, ...).
LOG_ONLY_WARNINGS = re.compile(r"Checkpoint directory .* exists and is not empty")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _ConsoleHandler(logging.Handler):
    """Writes to sys.stderr as it is at that moment (the CLI runner of the tests swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        _to_console(self.format(record))


def _to_console(line: str) -> None:
    """One line on stderr, above a progress line rather than through it, and before any later
    output on stdout (stderr need not be line-buffered)."""
    tqdm.write(line, file=sys.stderr)
    sys.stderr.flush()


def notice(line: str) -> None:
    """A line worth seeing once (a choice made for this machine): on the console and in the
    run log that `lightning_output_to` attaches."""
    log.info(line)
    _to_console(line)


def _notices() -> logging.Logger:
    """The "monkeyreport" logger: warnings as one line `warning: ...` on the console; its info
    records reach only the run log that `lightning_output_to` attaches."""
    logger = logging.getLogger("monkeyreport")
    if not any(isinstance(handler, _ConsoleHandler) for handler in logger.handlers):
        console = _ConsoleHandler(logging.WARNING)
        console.setFormatter(logging.Formatter("warning: %(message)s"))
        logger.addHandler(console)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


log = _notices()


@contextlib.contextmanager
def lightning_output_to(path: Path | None) -> Iterator[None]:
    """Send Lightning's log records and all warnings to the log file `path` (appended; None:
    nowhere, as in the other processes of a multi-process run, which write no files), and
    this package's notices there too. Warnings other than Lightning's advice still show."""
    handler: logging.Handler = (logging.FileHandler(path, encoding="utf-8", delay=True) if path
                                else logging.NullHandler())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    saved = [(logger.handlers[:], logger.propagate) for logger in loggers]
    shown = warnings.showwarning
    for logger in loggers:
        logger.handlers, logger.propagate = [handler], False
    log.addHandler(handler)
    warnings.showwarning = _warning_router(handler)
    try:
        yield
    finally:
        warnings.showwarning = shown
        log.removeHandler(handler)
        for logger, (handlers, propagate) in zip(loggers, saved):
            logger.handlers, logger.propagate = handlers, propagate
        handler.close()


def _warning_router(handler: logging.Handler) -> Callable[..., None]:
    """A `warnings.showwarning` that logs every warning to `handler` and shows on stderr
    those that are not Lightning's advice."""

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:
        text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
        handler.handle(logging.makeLogRecord({"name": "py.warnings", "levelno": logging.WARNING,
                                              "levelname": "WARNING", "msg": text}))
        if not (issubclass(category, PossibleUserWarning) or LOG_ONLY_WARNINGS.search(str(message))):
            _to_console(text)

    return show


@contextlib.contextmanager
def progress_line(name: str, show: bool) -> Iterator[ExperimentProgress | None]:
    """The progress line of experiment `name`, or None: when `show` is false or stderr is not
    a terminal (a pipe, a CI log), there is none. It is cleared at the end, before the result
    line."""
    if not (show and sys.stderr.isatty()):
        yield None
        return
    progress = ExperimentProgress(name)
    try:
        yield progress
    finally:
        progress.close()


class ExperimentProgress(ProgressBar):
    """One line for a whole experiment: its name, epoch, step, time left, training loss and
    validation accuracy, fitted to the terminal's width so that it never wraps. Every Trainer
    of the experiment (feature pass, training, prediction) shares it; a LightningModule names
    its prediction pass with a `progress_label` attribute."""

    MIN_BAR = 10  # columns; a narrower bar is left out

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self._enabled = True
        self._line: tqdm | None = None
        self._start = (0.0, 0)  # time and step when the current pass started: the rate so far

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, str]:
        """Training loss and validation accuracy (not Lightning's version number or the F1)."""
        metrics = trainer.progress_bar_metrics
        shown = (("train_loss", "loss"), ("val_accuracy", "val_acc"))
        return {label: f"{float(metrics[key]):.3f}" for key, label in shown if key in metrics}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A resumed run starts at the steps its checkpoint holds.
        self._begin(trainer, pl_module, int(trainer.max_epochs * self.total_train_batches), trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._show(trainer, pl_module, 1)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._show(trainer, pl_module, 0)  # the new validation accuracy

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._begin(trainer, pl_module, int(sum(trainer.num_predict_batches)), 0)

    def on_predict_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._show(trainer, pl_module, 1)

    def close(self) -> None:
        if self._line is not None:
            self._line.close()
            self._line = None

    def _begin(self, trainer: L.Trainer, pl_module: L.LightningModule, total: int, done: int) -> None:
        """Start a pass of `total` steps, `done` of them already done."""
        if not self._enabled:
            return
        if self._line is None:
            self._line = tqdm(file=sys.stderr, leave=False, dynamic_ncols=True, mininterval=0.5,
                              bar_format="{desc}")
        self._line.total, self._line.n = total, done
        self._start = (time.monotonic(), done)
        self._show(trainer, pl_module, 0)

    def _show(self, trainer: L.Trainer, pl_module: L.LightningModule, steps: int) -> None:
        line = self._line
        if line is None or not self._enabled:
            return
        width = _terminal_width() - 1  # writing the last column wraps on some terminals
        text = fit_parts(self._parts(trainer, pl_module, line.n + steps, line.total), width)
        line.bar_format = "{desc} {bar}" if width - len(text) - 1 >= self.MIN_BAR else "{desc}"
        line.set_description_str(text, refresh=False)
        if steps:
            line.update(steps)
        else:
            line.refresh()

    def _parts(self, trainer: L.Trainer, pl_module: L.LightningModule, done: int, total: int) -> list[str]:
        """Name, pass, steps, time left and, in training, loss and accuracy: most important first."""
        position = [f"{done}/{total}", self._time_left(done, total)]
        if trainer.state.fn != TrainerFn.FITTING:
            return [self.name, getattr(pl_module, "progress_label", "predicting"), *position]
        metrics = [f"{label} {value}" for label, value in self.get_metrics(trainer, pl_module).items()]
        return [self.name, f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}", *position, *metrics]

    def _time_left(self, done: int, total: int) -> str:
        started, first = self._start
        if done <= first:
            return "? left"
        elapsed = time.monotonic() - started
        return f"{tqdm.format_interval((total - done) * elapsed / (done - first))} left"


def fit_parts(parts: list[str], width: int) -> str:
    """The leading `parts` that fit in `width` columns, space-separated; the first always,
    cut to the width."""
    text = parts[0][:width]
    for part in parts[1:]:
        if len(text) + 1 + len(part) > width:
            break
        text = f"{text} {part}"
    return text


def _terminal_width() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns or 80
    except (OSError, ValueError):
        return 80
