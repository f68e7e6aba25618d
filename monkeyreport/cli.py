"""The `monkeyreport` command line: parse options, call a stage, report errors in one line."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, Optional, TypeVar

import typer

from monkeyreport.config import (
    DEFAULT_CONFIG,
    DEFAULT_DATA_ROOT,
    Config,
    data_dir_override,
    load_config,
    resolve_data_root,
)
from monkeyreport.errors import MonkeyReportError

app = typer.Typer(help="Build the Spanish CNN report on the 10 Monkey Species dataset.",
                  no_args_is_help=True, add_completion=False)
data_app = typer.Typer(help="Find, check and download the dataset.", no_args_is_help=True)
app.add_typer(data_app, name="data")

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="TOML config file.")]
DataDirOpt = Annotated[Optional[Path], typer.Option(
    "--data-dir", help="Dataset folder (overrides $MONKEYREPORT_DATA and the config).")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", help="Report output folder.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Redo the work even if nothing changed.")]
OnlyOpt = Annotated[Optional[list[str]], typer.Option("--only", help="Run only this experiment (repeatable).")]
EpochsOpt = Annotated[Optional[int], typer.Option("--epochs", min=1, help="Override training.epochs.")]
NoWaitOpt = Annotated[bool, typer.Option(
    "--no-wait", help="Stop instead of waiting when another build or train uses the same runs folder.")]
QuietOpt = Annotated[bool, typer.Option(
    "--quiet", help="No progress bars, only result lines (for scripts and CI).")]
JobsOpt = Annotated[int, typer.Option(
    "--jobs", "-j", min=1, help="Train with N worker processes on this machine (one GPU each, or cores/N threads).")]

F = TypeVar("F", bound=Callable[..., None])


def user_errors(command: F) -> F:
    """Turn a MonkeyReportError into `error: <one line>` on stderr and exit code 1;
    Ctrl-C outside training (which handles it itself) exits 130 without a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs) -> None:
        try:
            command(*args, **kwargs)
        except MonkeyReportError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted; finished results are kept, rerun to continue", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _load(path: Path) -> Config:
    """The config at `path`; without --config, ./monkeyreport.toml or else the packaged default."""
    from monkeyreport.project import config_for

    return load_config(config_for(Path.cwd()) if path == DEFAULT_CONFIG else path)


def _config(path: Path, data_dir: Path | None = None, out: Path | None = None,
            epochs: int | None = None) -> Config:
    return _load(path).with_overrides(data_dir=data_dir_override(data_dir), out=out, epochs=epochs)


def _with_dataset(config: Config) -> Config:
    """Download the dataset into its default place when no folder was given and it is not
    there yet; without network, the one-line message of `data download`."""
    if config.data.root or DEFAULT_DATA_ROOT.exists():
        return config
    from monkeyreport.data import download

    typer.echo(f"dataset not found at {DEFAULT_DATA_ROOT} and no --data-dir given: downloading it")
    typer.echo(f"dataset ready at {download(DEFAULT_DATA_ROOT)}")
    return config


@app.command()
@user_errors
def eda(config: ConfigOpt = DEFAULT_CONFIG, data_dir: DataDirOpt = None, out: OutOpt = None,
        force: ForceOpt = False) -> None:
    """Run the exploratory analysis: eda.json and the data figures (when their inputs changed)."""
    from monkeyreport.pipeline import Options, run

    run(_with_dataset(_config(config, data_dir, out)), Options(force=force, echo=typer.echo), ["eda"])


@data_app.command("check")
@user_errors
def data_check(config: ConfigOpt = DEFAULT_CONFIG, data_dir: DataDirOpt = None) -> None:
    """Find the dataset, probe every file, print the summary and every problem."""
    from monkeyreport.data import list_files, locate, scan
    from monkeyreport.eda import summarize

    cfg = _config(config, data_dir)
    layout = locate(resolve_data_root(cfg))
    records = scan(layout, list_files(layout), cfg.data.max_image_pixels, cfg.eda.workers)
    s = summarize(layout, records, cfg.eda.near_duplicate_distance)
    typer.echo(f"dataset: {layout.root}")
    typer.echo(f"labels: {layout.labels_file or '(none: folder names used)'}")
    for split, counts in s["splits"].items():
        typer.echo(f"{split}: {counts['total']} images in {layout.split_dirs[split]} "
                   + " ".join(f"{c}={n}" for c, n in counts["per_class"].items()))
    problems = [p["message"] for p in s["dataset_problems"]]
    problems += [f"skipped {u['file']}: {u['reason']}" for u in s["unreadable"]]
    problems += [f"used {o['file']}: {o['reason']}" for o in s["odd_files"]]
    dup = s["duplicates"]
    if dup["n_groups"]:
        problems.append(f"{dup['n_groups']} groups of identical or near-identical images, "
                        f"{dup['n_cross_split_groups']} shared between training and validation")
    for line in problems:
        typer.echo(f"  - {line}")
    usable = all(counts["total"] > 0 for counts in s["splits"].values())
    typer.echo(f"{len(problems)} problem(s); dataset is {'usable' if usable else 'NOT usable'}")
    if not usable:
        raise typer.Exit(1)


@data_app.command("download")
@user_errors
def data_download(dest: Annotated[Path, typer.Option(help="Where to place the dataset.")]
                  = Path("data/10-monkey-species")) -> None:
    """Download the Kaggle dataset '10 Monkey Species' with kagglehub."""
    from monkeyreport.data import download

    typer.echo(f"dataset ready at {download(dest)}")


@app.command()
@user_errors
def models(config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """List the configured experiments with parameter counts of the instantiated models."""
    from monkeyreport.models import count_parameters, create
    from monkeyreport.training import select_experiments

    cfg = _load(config)
    select_experiments(cfg, None)  # unknown architectures: one line naming the experiment
    typer.echo(f"{'experiment':<28} {'architecture':<20} {'frozen':<7} {'weights':<10} "
               f"{'total':>12} {'trainable':>12}")
    for exp in cfg.experiments:
        # Counting needs no weights: random initialisation has the same shapes.
        total, trainable = count_parameters(create(exp.architecture, frozen=exp.frozen).model)
        typer.echo(f"{exp.name:<28} {exp.architecture:<20} {'yes' if exp.frozen else 'no':<7} "
                   f"{exp.pretrained[:10]:<10} {total:>12,} {trainable:>12,}")


@app.command()
@user_errors
def train(config: ConfigOpt = DEFAULT_CONFIG, data_dir: DataDirOpt = None, only: OnlyOpt = None,
          epochs: EpochsOpt = None, force: ForceOpt = False, no_wait: NoWaitOpt = False,
          quiet: QuietOpt = False, jobs: JobsOpt = 1) -> None:
    """Train the configured experiments and write runs/<experiment>/ results. Several train
    processes on one runs folder share out its runs (docs/grid.md)."""
    from monkeyreport.training import select_experiments

    cfg = _config(config, data_dir, epochs=epochs)
    select_experiments(cfg, only)  # a config error stops here, before anything is written
    with _one_at_a_time(cfg, no_wait):
        if jobs > 1:
            failed = _start_workers(cfg, jobs, only, force)
        else:
            failed = _train_here(cfg, only, force, quiet)
    if failed:
        raise typer.Exit(1)


def _train_here(config: Config, only: list[str] | None, force: bool, quiet: bool) -> bool:
    """Train as one worker; whether a run failed (said on stderr). Rank 0 prints each run's
    result line as soon as it is known; another process of a multi-process run (training.py)
    reports nothing and says False: Lightning kills every process when one exits with an error."""
    from monkeyreport.placement import is_global_zero
    from monkeyreport.training import ExperimentFailure, ExperimentHeld, train_all

    outcomes = train_all(config, only=only, force=force, show_progress=not quiet, echo=typer.echo)
    if not is_global_zero():
        return False
    held = [o for o in outcomes if isinstance(o, ExperimentHeld)]
    if held:
        typer.echo(f"{len(held)} run(s) left to the workers that hold them")
    failed = [o for o in outcomes if isinstance(o, ExperimentFailure)]
    if failed:
        typer.echo(f"error: {len(failed)} of {len(outcomes)} experiment(s) failed", err=True)
    return bool(failed)


def _start_workers(config: Config, jobs: int, only: list[str] | None, force: bool) -> bool:
    """Train with `jobs` worker processes (workers.py); whether one of them failed."""
    from monkeyreport.workers import run_workers

    if config.trainer.devices not in ("auto", 1, "1") or config.trainer.num_nodes != 1:
        raise MonkeyReportError(f"{config.source}: --jobs starts one single-device worker per job; it does "
                                "not combine with [trainer] devices or num_nodes (start the workers yourself, "
                                "see docs/grid.md)")
    arguments = ["--config", config.source, "--quiet"]
    arguments += ["--data-dir", str(resolve_data_root(config))]
    arguments += ["--epochs", str(config.training.epochs)]
    arguments += [a for name in only or [] for a in ("--only", name)]
    arguments += ["--force"] if force else []
    failed = run_workers(arguments, jobs, typer.echo)
    if failed:
        typer.echo(f"error: {failed} of {jobs} worker(s) failed", err=True)
    return bool(failed)


class OutputFormat(str, Enum):
    html = "html"
    pdf = "pdf"
    both = "both"


FormatOpt = Annotated[OutputFormat, typer.Option("--format", help="Which outputs to write.")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Fail when an experiment has no results.")]
TemplatesOpt = Annotated[Optional[Path], typer.Option(
    "--templates", help="Templates folder (default: ./templates if present, else the packaged ones).")]


@app.command()
@user_errors
def render(config: ConfigOpt = DEFAULT_CONFIG, out: OutOpt = None, format: FormatOpt = OutputFormat.both,
           strict: StrictOpt = False, templates: TemplatesOpt = None) -> None:
    """Render the Spanish report (report.html, report.pdf) from the results on disk; the
    statistics and figures are brought up to date first."""
    from monkeyreport.pipeline import Options, render_report

    options = Options(templates_dir=templates, fmt=format.value, strict=strict, echo=typer.echo)
    outcome = render_report(_config(config, out=out), options)
    _exit_on_unreadable(outcome.problems)


def _one_at_a_time(config: Config, no_wait: bool) -> contextlib.AbstractContextManager:
    """The runs folder for this config's workers only (lock.py), taken by the main process:
    the other processes of a multi-process run are its helpers."""
    from monkeyreport.build import is_main_process
    from monkeyreport.lock import for_config

    if not is_main_process():
        return contextlib.nullcontext()
    return for_config(config.runs_dir, config_key(config), wait=not no_wait, echo=typer.echo)


def config_key(config: Config) -> str:
    """What makes two processes workers of one config: its content, wherever the dataset
    and the config file are on each machine."""
    from monkeyreport.config import stable_hash

    return stable_hash(dataclasses.replace(config, source="", data=dataclasses.replace(config.data, root="")))[:12]


def _exit_on_unreadable(problems: list[str]) -> None:
    """The report was written with those rows marked; the command still fails, naming the files."""
    for problem in problems:
        typer.echo(f"error: {problem}", err=True)
    if problems:
        raise typer.Exit(1)


@app.command()
@user_errors
def build(config: ConfigOpt = DEFAULT_CONFIG, data_dir: DataDirOpt = None, out: OutOpt = None,
          force: ForceOpt = False, templates: TemplatesOpt = None, no_wait: NoWaitOpt = False,
          quiet: QuietOpt = False, jobs: JobsOpt = 1) -> None:
    """Run eda, training, model summaries and rendering; skip each stage that is unchanged."""
    from monkeyreport.build import build as run_build

    start = time.perf_counter()
    cfg = _config(config, data_dir, out)
    with _one_at_a_time(cfg, no_wait):
        cfg = _with_dataset(cfg)
        train = (lambda: _start_workers(cfg, jobs, None, force)) if jobs > 1 else None
        outcome = run_build(cfg, force=force, templates_dir=templates, echo=typer.echo,
                            show_progress=not quiet, train=train)
    if outcome is None:
        return  # it trained beside rank 0, which reports; exit 0 (see `train`)
    if outcome.stopped:
        typer.echo(f"build stopped after training in {time.perf_counter() - start:.1f} s: other workers hold "
                   "runs; the one that finishes last renders the report")
        return
    typer.echo(f"build finished in {time.perf_counter() - start:.1f} s")
    if outcome.failed:
        typer.echo(f"error: {len(outcome.failed)} experiment(s) failed: {', '.join(outcome.failed)}",
                   err=True)
    _exit_on_unreadable(outcome.problems)
    if outcome.failed:
        raise typer.Exit(1)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print the states as JSON.")]


@app.command()
def status(config: ConfigOpt = DEFAULT_CONFIG, data_dir: DataDirOpt = None, out: OutOpt = None,
           templates: TemplatesOpt = None, json_output: JsonOpt = False) -> None:
    """Say which stages and runs a build would redo, and why, without running anything.
    Exit code 0: everything fresh; 1: a build would do work; 2: an error."""
    import json

    from monkeyreport.pipeline import Options, plan
    from monkeyreport.run_state import run_states

    try:
        cfg = _config(config, data_dir, out)
        stages = plan(cfg, Options(templates_dir=templates))
        runs = run_states(cfg)
    except MonkeyReportError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    stale = any(not s.fresh for s in stages)
    if json_output:
        typer.echo(json.dumps({"stale": stale, "stages": [dataclasses.asdict(s) for s in stages],
                               "runs": [dataclasses.asdict(r) for r in runs]}, indent=2, ensure_ascii=False))
    else:
        for s in stages:
            typer.echo(s.line())
        for r in runs:
            typer.echo(r.line())
        typer.echo("a build would run: " + ", ".join(s.name for s in stages if not s.fresh) if stale
                   else "everything fresh")
    if stale:
        raise typer.Exit(1)


ProfileOpt = Annotated[str, typer.Option("--profile", help="Which config to start from: default, smoke or offline.")]


@app.command()
@user_errors
def init(dest: Annotated[Path, typer.Argument(help="The report folder to create.")],
         profile: ProfileOpt = "default", force: ForceOpt = False) -> None:
    """Start a report folder: a monkeyreport.toml and a copy of the templates to edit."""
    from monkeyreport.project import init as init_project

    for path in init_project(dest, profile, force):
        typer.echo(f"wrote {path}")
    typer.echo(f"next: cd {dest} && monkeyreport build --data-dir <dataset folder>")


@app.command()
@user_errors
def preview(config: ConfigOpt = DEFAULT_CONFIG, out: OutOpt = None, templates: TemplatesOpt = None,
            host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
            port: Annotated[int, typer.Option(help="Port to listen on (0: any free one).")] = 8000) -> None:
    """Serve the report's HTML and re-render it whenever a template or the config changes."""
    from monkeyreport.pipeline import Options, render_report
    from monkeyreport.preview import serve
    from monkeyreport.project import templates_for

    templates_dir = templates or templates_for(Path.cwd())

    def render_html() -> None:  # the config is read again: it may be what changed
        render_report(_config(config, out=out), Options(templates_dir=templates_dir, fmt="html",
                                                        echo=lambda _: None), force=False)

    serve(_config(config, out=out), templates_dir, render_html, host, port, typer.echo)
