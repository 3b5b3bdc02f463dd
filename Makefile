# advkd developer and newcomer commands. Everything runs inside ./.venv.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
ADVKD   = $(BIN)/advkd
export ADVKD_DATA_DIR ?= ./data
export ADVKD_RUNS_DIR ?= ./runs

# The demo: the whole pipeline on CIFAR-10 at mini scale (README.md, "Install"; docs/scales.md, "The demo distils with AdaAD").
DEMO_TEACHER = $(ADVKD_RUNS_DIR)/pretrain-teacher/cifar10/wrn34-10-trades-mini-s0/best.safetensors
DEMO_STUDENT = $(ADVKD_RUNS_DIR)/distill/cifar10/resnet18-adaad-wrn34-10-mini-s0/best.safetensors

.PHONY: install install-core test test-slow demo lint clean-demo reproduce-mini reproduce-small bench bench-busy gpu-check docs fidelity

# Two stamps: the demo and the reproduce targets need advkd alone (install-core); tests, lint, bench
# and gpu-check also need the dev extra (pytest, hypothesis, torchattacks, robustbench, pandas, ruff).
$(VENV)/.advkd-core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.advkd-dev: $(VENV)/.advkd-core
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

install-core: $(VENV)/.advkd-core

install: $(VENV)/.advkd-dev

test: install
	$(BIN)/python -m pytest -m "not slow"

test-slow: install
	$(BIN)/python -m pytest -m slow
	HYPOTHESIS_PROFILE=slow $(BIN)/python -m pytest tests/test_settings_schema.py tests/test_file_battery.py

lint: install
	$(BIN)/ruff check advkd tests tools

demo: install-core
	$(ADVKD) pretrain-teacher --arch wrn34-10 --method trades --dataset cifar10 --preset mini --resume --download
	$(ADVKD) distill --method adaad --student resnet18 --teacher wrn34-10 --dataset cifar10 --preset mini --resume --download
	$(ADVKD) attack $(DEMO_STUDENT) --suite quick --n-examples 1000
	$(ADVKD) report table2

# AdaAD Table 2, ResNet-18 rows, WRN-34-10 teacher, at mini scale: plan, run, show (see docs/presets.md).
reproduce-mini: install-core
	mkdir -p $(ADVKD_RUNS_DIR)
	$(ADVKD) report table2 --plan --preset mini --only student=resnet18 --only teacher=wrn34-10 --n-examples 200 > $(ADVKD_RUNS_DIR)/reproduce-mini.sh
	PATH="$(CURDIR)/$(BIN):$$PATH" bash -e $(ADVKD_RUNS_DIR)/reproduce-mini.sh
	$(ADVKD) report table2

# Both papers' CIFAR-10 tables at small scale (1 h 26 min measured on a 2-core Intel Xeon with
# native bf16, about 4-5 h estimated on an AVX2 CPU in fp32; resumable: run it again to continue): AdaAD Table 2 (ResNet-18
# rows, WRN-34-10 teacher) and the RSLAD, MTARD and B-MTARD students of B-MTARD Table III, three
# seeds of PGD-AT, RSLAD, AdaAD and B-MTARD; then the teachers' own accuracy, PGD-10 for MTARD and
# B-MTARD, and both tables with the ranking footer (see docs/results-small.md).
SMALL_TEACHERS = $(ADVKD_RUNS_DIR)/pretrain-teacher/cifar10/wrn34-10-trades-small-s0/best.safetensors $(ADVKD_RUNS_DIR)/pretrain-teacher/cifar10/resnet56-natural-small-s0/best.safetensors
reproduce-small: install-core
	mkdir -p $(ADVKD_RUNS_DIR)
	$(ADVKD) report table2 --plan --preset small --only student=resnet18 --only teacher=wrn34-10 > $(ADVKD_RUNS_DIR)/reproduce-small-table2.sh
	PATH="$(CURDIR)/$(BIN):$$PATH" bash -e $(ADVKD_RUNS_DIR)/reproduce-small-table2.sh
	$(ADVKD) report bmtard-table3 --plan --preset small --only student=resnet18 --only dataset=cifar10 --only method=rslad,mtard,bmtard > $(ADVKD_RUNS_DIR)/reproduce-small-table3.sh
	PATH="$(CURDIR)/$(BIN):$$PATH" bash -e $(ADVKD_RUNS_DIR)/reproduce-small-table3.sh
	for t in $(SMALL_TEACHERS); do $(ADVKD) attack $$t --suite quick --n-examples 1000 --format json > /dev/null || exit 1; done
	# MTARD and B-MTARD also under AdaAD's PGD-10, so every student is compared on one attack
	for c in $(ADVKD_RUNS_DIR)/distill/cifar10/resnet18-*mtard-*small-s*/best.safetensors; do $(ADVKD) attack $$c --attacks pgd10 --n-examples 1000 --format json > /dev/null || exit 1; done
	$(ADVKD) report table2 --ranking
	$(ADVKD) report bmtard-table3 --ranking

# The authors' own training scripts beside advkd at a CPU budget (docs/fidelity.md): trains the
# preset's teachers if missing, then per method and seed the reference script (cloned from GitHub
# at its pinned commit, or REPOS="--repo OWNER/NAME=PATH ..." for local checkouts) and advkd's run,
# attacks both final students, prints the table. Resumable; one row: make fidelity METHODS=rslad
METHODS ?= adaad,rslad,mtard,bmtard
SEEDS   ?= 0,1,2
PRESET  ?= mini
# A mini PGD-AT epoch quiet and beside one busy core (docs/speed.md, "A busy machine"; ~15 min).
bench-busy: install
	$(BIN)/python -m benchmarks.busy_core

fidelity: install-core
	$(BIN)/python -m benchmarks.reference_runs.side_by_side --methods $(METHODS) --seeds $(SEEDS) --preset $(PRESET) $(REPOS)

# The AutoAttack pair times a trained model: the demo's student when `make demo` has made it.
AA_CHECKPOINT ?= $(wildcard $(DEMO_STUDENT))
bench: install
	$(BIN)/python -m benchmarks.speed_paths
	$(BIN)/python -m benchmarks.cpu_paths
	$(BIN)/python -m benchmarks.bench $(if $(AA_CHECKPOINT),--aa-checkpoint $(AA_CHECKPOINT))
	$(BIN)/python -m benchmarks.first_run $(if $(AA_CHECKPOINT),--checkpoint $(AA_CHECKPOINT),--quick) --out benchmarks/results/first-run-latest.json

# On a CUDA machine (at most 6 minutes on one H100): CPU/CUDA parity of every method, torchrun over NCCL,
# the CUDA defaults' training and throughput, evaluation vs torchattacks / pyautoattack, the paper plan's
# price; writes benchmarks/results/gpu-<device>.json and .md, exits non-zero on a correctness failure.
gpu-check: install
	$(BIN)/python -m benchmarks.gpu_check

# docs/cli.md, the command reference, rendered from the Typer app (tests/test_cli_reference.py checks it is current).
docs: install
	$(BIN)/python tools/cli_reference.py --out docs/cli.md

clean-demo:
	rm -rf $(ADVKD_RUNS_DIR)/pretrain-teacher/cifar10/wrn34-10-trades-mini-s0 $(ADVKD_RUNS_DIR)/distill/cifar10/resnet18-adaad-wrn34-10-mini-s0
