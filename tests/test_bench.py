"""`make bench` runs end to end on a tiny dataset and writes its table."""

import subprocess
import sys

from conftest import REPO, make_dataset
from test_training import write_config


def test_bench_writes_plain_optimised_and_floor(tmp_path):
    data = make_dataset(tmp_path / "d", per_class=(6, 2))
    frozen = {"name": "frozen", "architecture": "resnet34", "frozen": True}
    config = write_config(tmp_path, [{"name": "v", "architecture": "vanilla_cnn"}, frozen], data, epochs=2)
    out = tmp_path / "results.md"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench.py"), "--config", str(config),
                           "--finetune-epochs", "1", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    table = out.read_text()
    assert "CPU cores" in table and "Machine:" in table
    rows = [line for line in table.splitlines() if line.startswith("| v ") or line.startswith("| frozen ")]
    assert len(rows) == 2
    cells = [c.strip() for c in rows[1].split("|")[1:-1]]
    assert cells[:4] == ["frozen", "yes", "2", "total"]
    plain, optimised, floor = map(float, cells[4:7])
    assert plain > 0 and optimised > 0 and floor > 0
    accuracy_plain, accuracy_optimised = cells[9].split(" / ")
    assert accuracy_plain == accuracy_optimised  # the caches do not change the result
