# monkeyreport: `make report` sets everything up and builds the report; `make test` tests it.
VENV        ?= .venv
PYTHON      ?= python3
# The torch pair known to work on the project machines; override on yours if needed.
TORCH_PINS  ?= torch==2.14.1 torchvision==0.29.1
CONFIG      ?= configs/monkeyreport.toml
DATA_DIR    ?=

BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_FLAG := $(if $(DATA_DIR),--data-dir $(DATA_DIR))

BENCH_CONFIG ?= configs/monkeyreport.toml
BENCH_FLAGS  ?=

SOUNDNESS_CONFIG ?= configs/offline.toml
SOUNDNESS_FLAGS  ?=

.PHONY: install test eda train report bench bench-build bench-grid bench-features soundness clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

eda: install
	$(BIN)/monkeyreport eda --config $(CONFIG) $(DATA_FLAG)

train: install
	$(BIN)/monkeyreport train --config $(CONFIG) $(DATA_FLAG)

# The main job: analysis, training and the report (report/report.{html,pdf}).
report: install
	$(BIN)/monkeyreport build --config $(CONFIG) $(DATA_FLAG)

# fp32 vs the CPU fast path vs the plain step loop, per experiment; writes benchmarks/results.md.
bench: install
	$(BIN)/python benchmarks/bench.py --config $(BENCH_CONFIG) $(DATA_FLAG) $(BENCH_FLAGS)

# The whole build of $(BENCH_CONFIG) from nothing, with random weights instead of downloads
# (the same compute), into runs/bench and report/bench; prints its wall time.
bench-build: install
	rm -rf runs/bench report/bench && mkdir -p runs/bench
	sed -e 's/= "imagenet"/= "none"/' -e 's|^report_dir = .*|report_dir = "report/bench"|' \
	    -e 's|^runs_dir = .*|runs_dir = "runs/bench"|' $(BENCH_CONFIG) > runs/bench/config.toml
	start=$$(date +%s); $(BIN)/monkeyreport build --config runs/bench/config.toml $(DATA_FLAG) \
	    && echo "bench-build: $$(( $$(date +%s) - start )) s from nothing"

# One worker against two (--jobs) on a grid of frozen and fine-tuned runs; writes benchmarks/grid.md.
bench-grid: install
	$(BIN)/python benchmarks/grid.py $(DATA_FLAG)

# The study profile's frozen rows: a feature pass per run against one shared pass; writes benchmarks/features.md.
bench-features: install
	$(BIN)/python benchmarks/features.py $(DATA_FLAG)

# fp32 against the fast path over five seeds (the config's epochs each); writes benchmarks/soundness.md.
soundness: install
	$(BIN)/python benchmarks/soundness.py --config $(SOUNDNESS_CONFIG) $(DATA_FLAG) $(SOUNDNESS_FLAGS)

clean:
	rm -rf report runs
