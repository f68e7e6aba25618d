"""`make bench` runs end to end on a tiny dataset and writes its table."""

import re
import subprocess
import sys

from conftest import REPO, make_dataset
from test_training import write_config

from monkeyreport import fast_path

sys.path.insert(0, str(REPO / "benchmarks"))
import bench  # noqa: E402

LOOP_SETTINGS = {f"{layout} {precision}" for layout in ("contiguous", "channels-last")
                 for precision in ("32-true", "bf16-mixed")}


def cells_of(table: str, name: str, which: int = 0) -> list[str]:
    """The cells of `name`'s row in the main table (0) or in the per-setting table (1)."""
    rows = [line for line in table.splitlines() if line.startswith(f"| {name} |")]
    return [c.strip() for c in rows[which].split("|")[1:-1]]


def interval(cell: str) -> tuple[float, float]:
    """The values a printed number stands for: within half a unit of its last digit."""
    half = 0.5 * 10 ** -len(cell.partition(".")[2])
    return float(cell) - half, float(cell) + half


def ratio_matches(cell: str, numerator: str, denominator: str) -> bool:
    """Whether the printed ratio is numerator ÷ denominator, to the printed precision."""
    (n_low, n_high), (d_low, d_high), (r_low, r_high) = interval(numerator), interval(denominator), interval(cell)
    return r_low <= n_high / d_low and n_low / d_high <= r_high


def test_bench_compares_fp32_fast_path_and_plain_loop(tmp_path):
    data = make_dataset(tmp_path / "d", per_class=(6, 2))
    frozen = {"name": "frozen", "architecture": "resnet34", "frozen": True}
    config = write_config(tmp_path, [{"name": "v", "architecture": "vanilla_cnn"}, frozen], data, epochs=5)
    out = tmp_path / "results.md"
    out.write_text(f"an older table\n{bench.KEPT}\n\n## Build timings\nmeasured by hand\n")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench.py"), "--config", str(config),
                           "--loop-steps", "1", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    table = out.read_text()
    assert "CPU cores" in table and "Machine:" in table and "native bf16:" in table
    assert "an older table" not in table and table.endswith(f"{bench.KEPT}\n\n## Build timings\nmeasured by hand\n")
    native = fast_path.bf16_is_native()
    fp32_total = fast_total = 0.0
    for name, frozen_cell, measure in (("v", "no", "per epoch"), ("frozen", "yes", "total")):
        cells = cells_of(table, name)
        assert cells_of(done.stdout, name) == cells  # printed as the table says
        assert cells[1:4] == [frozen_cell, "1", measure]  # --epochs defaults to 1 for every run
        fp32, fast, measuring, loop = (float(cells[i]) for i in (4, 5, 8, 9))
        assert fp32 > 0 and fast > 0 and loop > 0 and measuring > 0  # the layout is measured on every CPU
        assert ratio_matches(cells[6], cells[4], cells[5])  # fp32/fast
        assert ratio_matches(cells[11], cells[5], cells[9])  # fast/plain loop
        # The fast path on a CPU: the measured layout, and bf16 only where the CPU has it.
        layout, precision = cells[7].split(" ")
        assert layout in ("channels-last", "contiguous")
        assert precision in (("32-true", "bf16-mixed") if native else ("32-true",))
        assert cells[10] in LOOP_SETTINGS
        per_setting = cells_of(table, name, 1)[1:]
        assert len(per_setting) == 4 and min(per_setting, key=float) == cells[9]
        accuracy_fp32, accuracy_fast = map(float, cells[12].split(" / "))
        assert 0 <= accuracy_fp32 <= 1 and 0 <= accuracy_fast <= 1
        fp32_total, fast_total = fp32_total + fp32, fast_total + fast
    totals = re.search(r"measured work: fp32 ([\d.]+) s, fast path ([\d.]+) s", table)
    assert totals and abs(float(totals[1]) - fp32_total) < 0.06 and abs(float(totals[2]) - fast_total) < 0.06
    assert "at the config's 5 epochs" in table and "excluding EDA, scan and render" in table
