# Two commands for a fresh clone: `make repro` and `make test`. Both (re)build .venv from
# requirements.lock when the lock or pyproject.toml is newer than the last install.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
# One BLAS thread per part of a batch: the bytes do not depend on the cores (README, "Threads").
export OPENBLAS_NUM_THREADS := 1
export OMP_NUM_THREADS := 1
export MKL_NUM_THREADS := 1
# Portable mode: the same bytes on any x86-64 CPU (see README, "Same bytes on any x86-64 CPU");
# `make repro PIPELINE_PORTABLE=0` uses this CPU's widest SIMD paths instead.
export PIPELINE_PORTABLE ?= 1

.PHONY: setup repro reproduction params ui test test-heavy lint format lock clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# conf/ is the source of the defaults: recompose params.yaml from it first (and say what
# changed), so an edit in conf/ is what runs. `dvc repro` alone runs params.yaml as it is.
repro: setup
	$(BIN)/python -m pipeline.config
	PATH=$(CURDIR)/$(BIN):$$PATH dvc repro
	@$(BIN)/python -m pipeline.summary

# The reproduction report (experiments/toolbox_replay): the toolbox's run replayed, seeds 0-4,
# 1-3 epochs, against the default mode; seed 0 over 100 epochs. About 20 minutes on 2 cores.
reproduction: repro
	$(BIN)/python -m pipeline.train -m +experiment=toolbox_replay
	$(BIN)/python -m pipeline.train -m +experiment=toolbox_100
	$(BIN)/python -m pipeline.reproduction

# The MLflow UI over the local store, lean: 2 processes and ~460 MB instead of ~15 and 2.4 GB.
UI_PORT ?= 5000
ui: setup
	@$(BIN)/python -c "import socket, sys; sys.exit(socket.socket().connect_ex(('127.0.0.1', $(UI_PORT))) == 0)" \
	  || { echo "port $(UI_PORT) is in use (a UI already running?): open http://127.0.0.1:$(UI_PORT), or UI_PORT=5001 make ui"; exit 1; }
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server --workers 1 \
	  --host 127.0.0.1 --port $(UI_PORT) --backend-store-uri sqlite:///$(CURDIR)/mlflow.db

# Rewrite params.yaml from conf/ (what `dvc exp run` does before each experiment).
params: setup
	$(BIN)/python -m pipeline.config

# Lint first (a second), then every test but the heavy ones, in a random order
# (pytest-randomly).
test: setup lint
	$(BIN)/python -m pytest -m "not heavy"

# The longest checks (marker `heavy`, about 5 minutes): every README block run as written,
# twelve Slurm jobs logging at once, the tracking server killed mid-sweep, scancel, a DVC queue
# sweep. CI runs them too.
test-heavy: setup
	$(BIN)/python -m pytest -m heavy

# One formatter for all the code: `ruff format` (no exceptions), and ruff's lint rules.
lint: setup
	$(BIN)/ruff format --check pipeline tests scripts
	$(BIN)/ruff check pipeline tests scripts

format: setup
	$(BIN)/ruff format pipeline tests scripts
	$(BIN)/ruff check --fix pipeline tests scripts

# Re-pin: uv resolves pyproject.toml (its dependencies, the dev extra, and setuptools for the
# editable build) for Python 3.11 to 3.13 on every platform, with hashes, keeping the versions
# pinned now where they still fit (`make lock LOCK_KEEP=` re-resolves everything).
LOCK_KEEP ?= -c .lockenv/current.txt
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv && .lockenv/bin/pip install -q uv
	grep -o '^[A-Za-z0-9_.-]*==[^ ;]*' requirements.lock > .lockenv/current.txt
	echo 'setuptools>=68' > .lockenv/build.in
	cd .lockenv && bin/uv pip compile ../pyproject.toml build.in --extra dev --universal \
	  --generate-hashes --python-version 3.11 --no-header $(LOCK_KEEP:.lockenv/%=%) -o lock.txt
	{ head -3 requirements.lock; grep -v -e '^    #   -c current.txt' -e '# via -c current.txt' \
	  .lockenv/lock.txt; } > requirements.lock.new
	mv requirements.lock.new requirements.lock && rm -rf .lockenv

clean:
	rm -rf $(VENV)
