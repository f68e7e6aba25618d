"""The pipeline as data: every stage declared once, and one rule for when a stage runs.

`STAGES` is the stage table, in the shape of DVC's dvc.yaml. Each stage names
- `reads`: the files it reads (patterns, see `expand`); checkpoints and caches are compared
  by size and modification time, every other file by its content;
- `params`: the config sections it reads;
- `code`: the modules whose code decides what it writes, and `version`, the schema version
  of what it writes (results.py);
- `writes`: what it writes; `after`: the stages whose outputs it reads.

The freshness rule, the same for every stage: a stage is fresh when its stamp
(report/.stages/<stage>.json, written when the stage completes) holds the same digest of
every input above, including the stamps of the stages it runs after, and every output it
recorded is still there unchanged. Anything else runs it again, and since a stage's stamp
is an input of the stages after it, everything downstream runs too.

`run` is the build: a loop over the table. `plan` is `monkeyreport status`: the same
decision for every stage, and the reason, without running anything. docs/pipeline.md shows
this table; a test checks it against the code.

This module imports neither torch nor matplotlib: deciding that nothing changed is cheap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

from monkeyreport import results
from monkeyreport.config import Config, stable_hash

By = Literal["content", "stat"]


@dataclass(frozen=True)
class Dep:
    """A file a stage reads: a pattern (see `expand`) and how its change is noticed."""

    pattern: str
    by: By = "content"


@dataclass(frozen=True)
class Stage:
    name: str
    purpose: str
    runner: str  # "module:function", imported only when the stage runs
    reads: tuple[Dep, ...]
    params: tuple[str, ...]  # config keys; "*" is every section
    code: tuple[str, ...]  # files of the monkeyreport package
    version: int
    writes: tuple[str, ...]
    after: tuple[str, ...] = ()


# Patterns: {report}, {runs} and {templates} are the folders of this build, {run} each
# run (an experiment with one seed, `Config.runs`), {architecture} each configured architecture, {format} each output
# format; "/**" is every file below a folder, "*" in a file name any name. Two inputs are not
# files: "dataset" (names, sizes and times of every image, data.fingerprint) and "config"
# (the config file's text).
EDA_JSON = "{report}/eda/eda.json"
METRICS = "{runs}/{run}/metrics.json"
PREDICTIONS = "{runs}/{run}/predictions.csv"
HISTORY = "{runs}/{run}/history.csv"
SPECIES = "{templates}/species.toml"
FIGURE_WORDS = "{templates}/figures.toml"
SUMMARY = "{report}/models/{architecture}.json"

STAGES: tuple[Stage, ...] = (
    Stage("eda", "counts, sizes, formats, odd files and duplicates of the dataset; the data figures",
          "monkeyreport.eda:run_stage",
          reads=(Dep("dataset"), Dep(SPECIES), Dep(FIGURE_WORDS)), params=("seed", "data.max_image_pixels", "eda"),
          code=("eda.py", "data.py", "figures.py", "species.py", "figure_words.py"), version=results.EDA_SCHEMA,
          writes=(EDA_JSON, "{report}/figures/class_distribution.png", "{report}/figures/sample_grid.jpg",
                  "{report}/figures/image_sizes.png")),
    # Training declares no code: a refactoring must not retrain hours of runs. A change that
    # alters what training produces bumps RESULTS_SCHEMA, which retrains.
    Stage("train", "one run per experiment: checkpoint, history, predictions, metrics",
          "monkeyreport.training:run_stage",
          reads=(Dep("dataset"),), params=("seed", "seeds", "training", "trainer", "experiments"),
          code=(), version=results.RESULTS_SCHEMA,
          writes=(METRICS, PREDICTIONS, HISTORY, "{runs}/{run}/checkpoints/last.ckpt",
                  "{runs}/{run}/checkpoints/best.ckpt")),
    Stage("summaries", "stages, shapes, parameters, FLOPs and CPU latency of each configured architecture",
          "monkeyreport.summaries:run_stage",
          reads=(), params=("experiments.architecture", "experiments.training", "training.crop"),
          code=("summaries.py", "models.py", "architectures.py", "fast_path.py"), version=results.SUMMARY_SCHEMA,
          writes=(SUMMARY,)),
    Stage("interpret", "top-loss galleries, Grad-CAM and training/validation duplicate pairs",
          "monkeyreport.interpret:run_stage",
          reads=(Dep("dataset"), Dep(EDA_JSON), Dep(METRICS), Dep(PREDICTIONS), Dep("{runs}/{run}/run.json"),
                 Dep("{runs}/{run}/checkpoints/last.ckpt", "stat"), Dep("{runs}/{run}/checkpoints/best.ckpt", "stat"),
                 Dep(SPECIES), Dep(FIGURE_WORDS)),
          params=("seeds", "experiments"),
          code=("interpret.py", "figures.py", "models.py", "architectures.py", "selection.py", "run_state.py",
                "report_figures.py", "species.py", "figure_words.py"),
          version=results.INTERPRET_SCHEMA,
          writes=("{report}/interpret/interpret.json", "{report}/interpret/*.jpg"), after=("eda", "train")),
    Stage("stats", "bootstrap intervals, duplicate-free metrics, McNemar tests, per-class metrics, calibration",
          "monkeyreport.stats:run_stage",
          reads=(Dep(EDA_JSON), Dep(METRICS), Dep(PREDICTIONS)), params=("seed", "seeds", "experiments"),
          code=("stats.py", "calibration.py", "selection.py", "architectures.py"), version=results.STATS_SCHEMA,
          writes=("{report}/stats/stats.json",), after=("eda", "train")),
    Stage("figures", "diagrams, confusion matrices, training curves, per-seed results and reliability diagrams",
          "monkeyreport.report_figures:run_stage",
          reads=(Dep(EDA_JSON), Dep(SUMMARY), Dep(METRICS), Dep(HISTORY), Dep("{report}/stats/stats.json"),
                 Dep(SPECIES), Dep(FIGURE_WORDS)),
          params=("seeds", "experiments", "training.selection"),
          code=("report_figures.py", "figures.py", "selection.py", "architectures.py", "run_state.py", "species.py",
                "figure_words.py"),
          version=results.FIGURES_SCHEMA,
          writes=("{report}/figures/figures.json", "{report}/figures/cnn_schematic.png",
                  "{report}/figures/transfer_learning.png", "{report}/figures/arch_*.png",
                  "{report}/figures/confusion_*.png", "{report}/figures/training_curves.png",
                  "{report}/figures/seeds.png", "{report}/figures/reliability.png"),
          after=("eda", "train", "summaries", "stats")),
    Stage("render", "report.html and report.pdf from the templates and the files above",
          "monkeyreport.render:run_stage",
          reads=(Dep("{templates}/**"), Dep("config"), Dep(EDA_JSON), Dep("{report}/stats/stats.json"),
                 Dep("{report}/interpret/interpret.json"), Dep(SUMMARY), Dep("{report}/figures/figures.json"),
                 Dep(METRICS), Dep("{runs}/{run}/failed.json"), Dep(HISTORY)),
          params=("*",),
          code=("render.py", "context.py", "findings.py", "spanish_format.py", "results.py", "selection.py",
                "architectures.py", "species.py"),
          version=results.RENDER_SCHEMA,
          writes=("{report}/report.{format}",),
          after=("eda", "train", "summaries", "interpret", "stats", "figures")),
)
STAGE_NAMES = tuple(s.name for s in STAGES)
RENDER_STAGES = ("stats", "figures", "render")  # what `render` and `preview` run: no torch
CONFIG_SECTIONS = ("seed", "seeds", "data", "output", "eda", "training", "trainer", "experiments", "report")
FORMATS = {"both": ("html", "pdf"), "html": ("html",), "pdf": ("pdf",)}
MAX_REASONS = 6  # `status` names this many changed inputs of a stage, then counts the rest


def stage_table() -> str:
    """The stage table as Markdown: docs/pipeline.md carries it, and a test compares the two."""
    def cell(items: Iterable[str]) -> str:
        return "<br>".join(f"`{i}`" for i in items) or "–"

    rows = ["| stage | what it makes | reads | config | code | version | writes | after |",
            "|---|---|---|---|---|---|---|---|"]
    for s in STAGES:
        reads = [d.pattern + (" (size, time)" if d.by == "stat" else "") for d in s.reads]
        rows.append(f"| {s.name} | {s.purpose} | {cell(reads)} | {cell(s.params)} | {cell(s.code)} | "
                    f"{s.version} | {cell(s.writes)} | {cell(s.after)} |")
    return "\n".join(rows) + "\n"


def downstream(name: str) -> list[str]:
    """`name` and every stage that runs after it, directly or not, in table order."""
    below = {name}
    for s in STAGES:
        if below & set(s.after):
            below.add(s.name)
    return [s for s in STAGE_NAMES if s in below]


def upstream(name: str) -> list[str]:
    """The stages `name` runs after, directly or not, in table order."""
    above = set(next(s for s in STAGES if s.name == name).after)
    for s in reversed(STAGES):
        if s.name in above:
            above |= set(s.after)
    return [s for s in STAGE_NAMES if s in above]


# ----------------------------------------------------------------------------- options


@dataclass
class Options:
    """How this invocation runs: not inputs of a stage, except `fmt` and the templates' files."""

    force: bool = False
    show_progress: bool = True
    templates_dir: Path | None = None  # None: ./templates if present, else the packaged ones
    fmt: str = "both"
    strict: bool = False
    echo: Callable[[str], None] = print
    started: float = field(default_factory=time.time)  # a run that failed since is not tried again

    @cached_property
    def templates(self) -> Path:
        from monkeyreport.project import templates_for

        return Path(self.templates_dir) if self.templates_dir else templates_for(Path.cwd())


@dataclass
class StageOutcome:
    """What a stage's run reports: its one result line, and whether it completed (the stamp
    of an incomplete stage says so, and the next build runs it again)."""

    line: str
    complete: bool = True
    failed: list[str] = field(default_factory=list)  # experiments that failed (train)
    problems: list[str] = field(default_factory=list)  # result files that could not be read
    outputs: list[Path] = field(default_factory=list)  # the documents written (render)
    reason: str = ""  # why it is incomplete, for `status`
    stop: bool = False  # the stages after it wait for another worker (train: runs held elsewhere)


# ----------------------------------------------------------------------------- inputs


class Inputs:
    """The inputs of this build's stages, each digested once."""

    def __init__(self, config: Config, options: Options) -> None:
        self.config = config
        self.options = options

    @cached_property
    def values(self) -> dict[str, list[str]]:
        archs = list(dict.fromkeys(e.architecture for e in self.config.experiments))
        return {"report": [str(self.config.report_dir)], "runs": [str(self.config.runs_dir)],
                "templates": [str(self.options.templates)],
                "run": [r.name for r in self.config.runs], "architecture": archs,
                "format": list(FORMATS.get(self.options.fmt, ()))}

    def expand(self, pattern: str) -> list[Path]:
        """The files a pattern names in this build (a folder's files, a glob's matches)."""
        names = re.findall(r"\{(\w+)\}", pattern)
        paths: list[Path] = []
        for combo in itertools.product(*(self.values[n] for n in names)):
            text = pattern
            for name, value in zip(names, combo):
                text = text.replace("{" + name + "}", value, 1)
            if text.endswith("/**"):
                folder = Path(text[:-3])
                paths += sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
            elif any(c in text for c in "*?["):
                path = Path(text)
                paths += sorted(p for p in path.parent.glob(path.name) if p.is_file())
            else:
                paths.append(Path(text))
        return paths

    @cached_property
    def dataset(self) -> str:
        from monkeyreport.run_state import dataset_fingerprint

        return dataset_fingerprint(self.config) or "unavailable"

    def param(self, key: str) -> str:
        value: Any = self.config
        for part in key.split("."):
            value = [getattr(v, part) for v in value] if isinstance(value, list) else getattr(value, part)
        return stable_hash(value)

    def of(self, s: Stage) -> dict[str, str]:
        """Every input of `s` as label -> digest: what its stamp records."""
        digests: dict[str, str] = {"version": str(s.version)}
        for module in s.code:
            digests[f"code {module}"] = code_digest(module)
        for key in (CONFIG_SECTIONS if s.params == ("*",) else s.params):
            digests[f"config [{key}]"] = self.param(key)
        for dep in s.reads:
            if dep.pattern == "dataset":
                digests["dataset"] = self.dataset
            elif dep.pattern == "config":
                digests["config file"] = _content(Path(self.config.source)) if self.config.source else "none"
            else:
                for path in self.expand(dep.pattern):
                    digests[self.label(path)] = _content(path) if dep.by == "content" else _stat(path)
        if s.name == "render":
            digests["option format"] = self.options.fmt
        for upstream in s.after:
            digests[f"stage {upstream}"] = Stamp.read(self.config, upstream).token
        return digests

    def label(self, path: Path) -> str:
        """How an input file is named in a stamp and in `status`: a template by its place in
        the templates folder (the same templates elsewhere are the same input), else its path."""
        try:
            return f"template {path.relative_to(self.options.templates).as_posix()}"
        except ValueError:
            return str(path)

    def outputs(self, s: Stage) -> dict[str, str]:
        """The outputs of `s` on disk now, by size and time."""
        return {str(p): _stat(p) for pattern in s.writes for p in self.expand(pattern) if p.is_file()}


def code_digest(module: str) -> str:
    """The digest of a module of this package, by content."""
    return _content(Path(__file__).parent / module)


def _content(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"


def _stat(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


# ----------------------------------------------------------------------------- stamps


@dataclass(frozen=True)
class Stamp:
    """report/.stages/<stage>.json: the inputs a stage last completed with, and its outputs."""

    stage: str
    inputs: dict[str, str]
    outputs: dict[str, str]
    complete: bool = True
    reason: str = ""

    @property
    def token(self) -> str:
        """What the stages after this one see of it: changes whenever it ran again."""
        if not self.inputs:
            return "never run"
        return stable_hash(self.inputs, self.outputs, self.complete)

    @classmethod
    def read(cls, config: Config, name: str) -> Stamp:
        """The stage's stamp; none (or an unreadable one) reads as never run."""
        path = results.ReportFiles(config.report_dir).stamp(name)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(name, dict(data["inputs"]), dict(data["outputs"]), bool(data.get("complete", True)),
                       str(data.get("reason", "")))
        except (OSError, ValueError, KeyError, TypeError):
            return cls(name, {}, {})

    def write(self, config: Config) -> None:
        results.write_json(results.ReportFiles(config.report_dir).stamp(self.stage), dataclasses.asdict(self))


# ----------------------------------------------------------------------------- freshness


@dataclass(frozen=True)
class StageState:
    name: str
    fresh: bool
    reasons: list[str]

    def line(self) -> str:
        return f"{self.name:<10} {'fresh' if self.fresh else 'stale: ' + '; '.join(self.reasons)}"


def why_stale(stamp: Stamp, inputs: dict[str, str], outputs: dict[str, str]) -> list[str]:
    """Why a stage with this stamp must run, given its inputs and outputs now; [] if fresh."""
    if not stamp.inputs:
        return ["never run"]
    reasons = []
    if not stamp.complete:
        reasons.append(f"last run incomplete{': ' + stamp.reason if stamp.reason else ''}")
    for label in dict.fromkeys([*stamp.inputs, *inputs]):
        before, now = stamp.inputs.get(label), inputs.get(label)
        if before == now:
            continue
        if label.startswith("stage "):
            reasons.append(f"{label.removeprefix('stage ')} ran again")
        elif before is None or before == "missing":
            reasons.append(f"{label} added")
        elif now is None or now == "missing":
            reasons.append(f"{label} removed")
        else:
            reasons.append(f"{label} changed")
    for path, before in stamp.outputs.items():
        now = outputs.get(path)
        if now != before:
            reasons.append(f"output {path} {'missing' if now is None else 'changed'}")
    return reasons[:MAX_REASONS] + ([f"{len(reasons) - MAX_REASONS} more"] if len(reasons) > MAX_REASONS else [])


def plan(config: Config, options: Options | None = None,
         names: Iterable[str] = STAGE_NAMES) -> list[StageState]:
    """Whether each stage would run, and why, without running anything. A stage below one
    that will run will run too (its input, that stage's stamp, will change)."""
    inputs = Inputs(config, options or Options())
    states: list[StageState] = []
    stale: set[str] = set()
    for s in STAGES:
        if s.name not in names:
            continue
        reasons = why_stale(Stamp.read(config, s.name), inputs.of(s), inputs.outputs(s))
        reasons += [f"{u} will run" for u in s.after if u in stale and f"{u} ran again" not in reasons]
        if reasons:
            stale.add(s.name)
        states.append(StageState(s.name, not reasons, reasons))
    return states


# ----------------------------------------------------------------------------- the loop


@dataclass
class PipelineOutcome:
    lines: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    stopped: bool = False  # at a stage that waits for another worker


def run(config: Config, options: Options | None = None, names: Iterable[str] = STAGE_NAMES,
        forced: Iterable[str] = ()) -> PipelineOutcome:
    """Run the named stages in table order, each only when it is stale (or `options.force`,
    or named in `forced`); one result line each through `options.echo`."""
    options = options or Options()
    names, forced = set(names), set(forced)
    outcome = PipelineOutcome()
    # One for the whole loop: files and stamps are digested when asked for (a stage before may
    # have written them); only what no stage writes (the dataset, the folders) is kept.
    inputs = Inputs(config, options)
    for s in STAGES:
        if s.name not in names:
            continue
        with _one_worker(config, s):
            digests = inputs.of(s)
            stamp = Stamp.read(config, s.name)
            if not (options.force or s.name in forced or why_stale(stamp, digests, inputs.outputs(s))):
                line = f"{s.name} unchanged, skipped"
                result = None
            else:
                result = _runner(s)(config, options)
                Stamp(s.name, digests, inputs.outputs(s), result.complete, result.reason).write(config)
        if result is not None:
            outcome.ran.append(s.name)
            outcome.failed += result.failed
            outcome.problems += result.problems
            outcome.outputs += result.outputs
            line = result.line
        outcome.lines.append(line)
        options.echo(line)
        if result is not None and result.stop:
            outcome.stopped = True
            break
    return outcome


def _one_worker(config: Config, s: Stage) -> contextlib.AbstractContextManager:
    """Workers of one runs folder (work_queue.py) run each stage but training one at a time:
    the first runs it, the others wait and find it fresh. Training shares out its runs."""
    if s.name == "train":
        return contextlib.nullcontext()
    from filelock import FileLock

    lock = results.ReportFiles(config.report_dir).stage_lock
    lock.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(lock)


def render_report(config: Config, options: Options, force: bool = True) -> PipelineOutcome:
    """What `render` and `preview` run: statistics and figures when stale, then the report
    (always with `force`, as `render` does; when stale without, as `preview` does)."""
    return run(config, options, RENDER_STAGES, forced=["render"] if force else [])


def _runner(s: Stage) -> Callable[[Config, Options], StageOutcome]:
    module, function = s.runner.split(":")
    return getattr(importlib.import_module(module), function)


def timed(start: float) -> str:
    """'done in 1.2 s': the start of a stage's result line."""
    return f"done in {time.perf_counter() - start:.1f} s"
