from pathlib import Path

import pytest

from monkeyreport.config import DEFAULT_DATA_ROOT, data_dir_override, load_config, resolve_data_root
from monkeyreport.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_default_config_loads():
    cfg = load_config(REPO / "configs" / "monkeyreport.toml")
    assert cfg.output.report_dir == "report"
    assert cfg.eda.near_duplicate_distance == 10


@pytest.mark.parametrize("text, message", [
    ("[eda]\nsampels_per_class = 3\n", "unknown key 'eda.sampels_per_class'"),
    ("colour = 1\n", "unknown key 'colour'"),
    ("seed = 'x'\n", "'seed' must be an integer, got string 'x'"),
    ("[eda]\nsamples_per_class = true\n", "'eda.samples_per_class' must be an integer, got boolean"),
    ("[eda]\nsamples_per_class = 40\n", "'eda.samples_per_class' must be 1..12"),
    ("eda = 3\n", "'eda' must be a table"),
    ("[training]\nlearning_rate = 'fast'\n", "'training.learning_rate' must be a number"),
    ("[training]\nresize = 100\ncrop = 224\n", "'training.resize' must be >= training.crop"),
    ("[trainer]\ndevices = 1.5\n", "'trainer.devices' has the wrong type"),
    ("[[experiments]]\nname = 'a'\n", "missing key 'experiments[0].architecture'"),
    ("[[experiments]]\nname='a'\narchitecture='x'\n[[experiments]]\nname='a'\narchitecture='y'\n",
     "'experiments[1].name' duplicates experiment name 'a'"),
    ("seed = \n", "invalid TOML"),
])
def test_invalid_config_is_one_line_naming_file_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text_out = str(info.value)
    assert message in text_out
    assert text_out.startswith(str(path))
    assert "\n" not in text_out


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_int_accepted_for_float_and_union_types(tmp_path):
    cfg = load_config(write(tmp_path, "[training]\nlearning_rate = 1\n[trainer]\ndevices = [0, 1]\n"))
    assert cfg.training.learning_rate == 1.0 and isinstance(cfg.training.learning_rate, float)
    assert cfg.trainer.devices == [0, 1]


def test_overrides(tmp_path):
    cfg = load_config(write(tmp_path, "")).with_overrides(data_dir=Path("/d"), out=Path("/o"), epochs=3)
    assert cfg.data.root == "/d" and cfg.report_dir == Path("/o") and cfg.training.epochs == 3
    with pytest.raises(ConfigError, match="--epochs"):
        cfg.with_overrides(epochs=0)


def test_data_root_resolution_order(tmp_path, monkeypatch):
    """--data-dir, then $MONKEYREPORT_DATA, then the config, then data/10-monkey-species."""
    monkeypatch.delenv("MONKEYREPORT_DATA", raising=False)
    plain = load_config(write(tmp_path, ""))
    from_config = load_config(write(tmp_path, "[data]\nroot = '/from/config'\n"))
    assert resolve_data_root(plain.with_overrides(data_dir=data_dir_override(None))) == DEFAULT_DATA_ROOT
    assert resolve_data_root(from_config.with_overrides(data_dir=data_dir_override(None))) == Path("/from/config")
    monkeypatch.setenv("MONKEYREPORT_DATA", "/from/env")
    assert resolve_data_root(from_config.with_overrides(data_dir=data_dir_override(None))) == Path("/from/env")
    flagged = from_config.with_overrides(data_dir=data_dir_override(Path("/flag")))
    assert resolve_data_root(flagged) == Path("/flag")
