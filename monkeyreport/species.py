"""The species' names as the report writes them: the templates folder's species.toml, else the
dataset's labels. Shared by everything that names a species (render, the figures, the
interpretation's figures), so a name is spelled the same in the text and in every figure.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from monkeyreport.errors import MonkeyReportError
from monkeyreport.results import EdaSummary

SPECIES_FILE = "species.toml"  # in the templates folder: the canonical species names


def species_table(templates_dir: Path) -> dict[str, dict[str, str]]:
    """Code -> {latin, common} from the templates folder's species.toml (empty without one)."""
    path = templates_dir / SPECIES_FILE
    if not path.is_file():
        return {}
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise MonkeyReportError(f"{path}: not valid TOML ({exc})") from None
    for code, names in table.items():
        if not (isinstance(names, dict) and isinstance(names.get("latin"), str)
                and isinstance(names.get("common"), str)):
            raise MonkeyReportError(f"{path}: [{code}] needs text values 'latin' and 'common'")
    return table


def class_entries(eda: EdaSummary, species: dict[str, dict[str, str]]) -> list[dict[str, str]]:
    """The dataset's classes named from the species table, or from the dataset's labels."""
    return [{"code": c["code"],
             "latin": species.get(c["code"], {}).get("latin", c["display_name"]),
             "common": species.get(c["code"], {}).get("common", c["common_name"].replace("_", " "))}
            for c in eda.classes]


def species_names(eda: EdaSummary, templates_dir: Path | None = None) -> dict[str, str]:
    """Code -> Latin name as the report writes it: the templates' species table (the folder's
    own templates/ or the packaged ones), else the dataset's labels."""
    from monkeyreport.project import templates_for

    table = species_table(templates_dir or templates_for(Path.cwd()))
    return {c["code"]: c["latin"] for c in class_entries(eda, table)}
