"""`make soundness` trains every variant with every seed and its table adds up."""

import re
import statistics
import subprocess
import sys

import pytest
from conftest import REPO, make_dataset
from test_bench import cells_of
from test_training import write_config

sys.path.insert(0, str(REPO / "benchmarks"))
import soundness  # noqa: E402
from bench import KEPT  # noqa: E402

N_VAL = 3 * 4  # make_dataset below: three classes, four validation images each
SETTING = {"fp32": "contiguous 32-true", "bf16": "channels-last bf16-mixed"}


def test_soundness_table_pairs_each_seed_across_variants(tmp_path):
    data = make_dataset(tmp_path / "d", per_class=(6, 4))
    config = write_config(tmp_path, [{"name": "v", "architecture": "vanilla_cnn"}], data, epochs=2)
    out = tmp_path / "soundness.md"
    out.write_text(f"older results\n{KEPT}\n\nnotes by hand\n")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "soundness.py"), "--config", str(config),
                           "--seeds", "3", "4", "--variants", "fp32", "fast", "bf16", "--epochs", "1",
                           "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    table = out.read_text()
    assert "older results" not in table and table.endswith(f"{KEPT}\n\nnotes by hand\n")
    assert "1 epoch(s)" in table and "seeds asked for: 3, 4" in table
    accuracy = {v: [] for v in ("fp32", "fast", "bf16")}
    differences = {"fast": [], "bf16": []}
    for seed in ("3", "4"):
        cells = cells_of(table, seed)
        assert cells_of(done.stdout, seed) == cells  # printed as the file says
        accuracy["fp32"].append(float(cells[1]))
        for v, (acc, points, test) in zip(("fast", "bf16"), (cells[2:5], cells[5:8])):
            accuracy[v].append(float(acc))
            differences[v].append(float(points))
            assert abs(float(points) - 100 * (float(acc) - float(cells[1]))) <= 0.051
            # McNemar's discordant images account for the whole difference in accuracy.
            counts, _, p = test.partition(", p = ")
            only_fp32, only_v = map(int, counts.split(" / "))
            assert abs((only_v - only_fp32) / N_VAL - (float(acc) - float(cells[1]))) < 1e-3
            assert 0 < float(p) <= 1
    for v, values in accuracy.items():
        line = next(line for line in table.splitlines() if line.startswith(f"- {v} ("))
        if v in SETTING:
            assert SETTING[v] in line
        else:  # the fast path measured both layouts (and precisions, with bf16) and names its pick
            assert re.search(r"^- fast \((channels-last|contiguous) (32-true|bf16-mixed)\)", line)
        assert f"mean accuracy {statistics.fmean(values):.4f}" in line
        if v != "fp32":
            mean = float(line.split("mean difference ")[1].split(" ")[0])
            assert abs(mean - statistics.fmean(differences[v])) < 0.06
            assert ("within the 2-point band" in line) == (abs(mean) <= 2)


@pytest.mark.parametrize("points, expected", [
    ([1.0, 3.0], "mean difference +2.00 points against fp32 (95 % interval -10.7 to +14.7): within the"),
    ([3.0, 3.0], "mean difference +3.00 points against fp32 (95 % interval +3.0 to +3.0): outside the"),
    ([-1.5], "mean difference -1.50 points against fp32: within the"),
])
def test_paired_difference_interval_and_band(points, expected):
    assert soundness.paired_difference(points).startswith(expected)
