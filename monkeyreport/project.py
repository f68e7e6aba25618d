"""Where a report project's config and templates come from, and `monkeyreport init`.

The package ships the report's templates (monkeyreport.templates, from the repository's
top-level templates/) and its configs (monkeyreport.configs, from configs/). A folder
that has its own `templates/` or `monkeyreport.toml` uses those; otherwise the packaged
ones are used, so an installed monkeyreport works from any folder. `init` writes a
self-contained report folder: the default config (or a profile) and a copy of the
templates, ready to be edited.
"""

from __future__ import annotations

import shutil
from importlib.resources import files
from pathlib import Path

from monkeyreport.errors import MonkeyReportError

CONFIG_NAME = "monkeyreport.toml"
TEMPLATES_NAME = "templates"
MAIN_TEMPLATE = "report.html.j2"
PROFILES = {"default": "monkeyreport.toml", "smoke": "smoke.toml", "offline": "offline.toml", "study": "study.toml"}
_NOT_TEMPLATES = shutil.ignore_patterns("__init__.py", "__pycache__")


def packaged_templates() -> Path:
    return Path(str(files("monkeyreport.templates")))


def packaged_config(profile: str = "default") -> Path:
    return Path(str(files("monkeyreport.configs").joinpath(PROFILES[profile])))


def templates_for(folder: Path) -> Path:
    """The folder's own templates/ when it has a report template, else the packaged ones."""
    own = folder / TEMPLATES_NAME
    return own if (own / MAIN_TEMPLATE).is_file() else packaged_templates()


def config_for(folder: Path) -> Path:
    """The folder's monkeyreport.toml when it has one, else the packaged default."""
    own = folder / CONFIG_NAME
    return own if own.is_file() else packaged_config()


def init(dest: Path, profile: str = "default", force: bool = False) -> list[Path]:
    """Write `dest`/monkeyreport.toml (from `profile`) and `dest`/templates/; returns them.

    Existing files are never overwritten unless `force`: a report folder holds the user's
    own text.
    """
    if profile not in PROFILES:
        raise MonkeyReportError(f"--profile: must be one of {', '.join(PROFILES)}, got '{profile}'")
    config, templates = dest / CONFIG_NAME, dest / TEMPLATES_NAME
    existing = [p for p in (config, templates) if p.exists()]
    if existing and not force:
        raise MonkeyReportError(f"{existing[0]}: already exists; pass --force to overwrite it")
    try:
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(packaged_config(profile), config)
        shutil.rmtree(templates, ignore_errors=True)
        shutil.copytree(packaged_templates(), templates, ignore=_NOT_TEMPLATES)
    except OSError as exc:
        raise MonkeyReportError(f"{dest}: cannot write the report folder ({exc.strerror})") from None
    return [config, templates]
