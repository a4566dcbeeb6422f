# The two commands of the README:
#   make report   builds results/report.html (creates .venv from the lock on first use)
#   make test     runs the test suite in the same environment
# and the one that changes the environment on purpose:
#   make lock     re-resolves requirements.lock from pyproject.toml, constraints.txt and overrides.txt
PYTHON      ?= python3
VENV        ?= .venv
LOCK        ?= requirements.lock
CONSTRAINTS ?= constraints.txt
OVERRIDES   ?= overrides.txt
PROFILE     ?= profiles/local
BIN         := $(VENV)/bin
UV          ?= $(BIN)/uv
# a failing command in a pipe fails the recipe
SHELL       := /bin/bash
.SHELLFLAGS := -o pipefail -ec
# A stamp that changes whenever what is installed would change.
STAMP       := $(VENV)/.medlens-installed

.PHONY: report test venv lock dag lint clean

report: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/snakemake --profile $(PROFILE) results/report.html

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

venv: $(STAMP)

# The environment is exactly the lock (env/install.sh, shared with the container recipes), then medlens
# itself without dependencies; `medlens.environment check` fails when the result differs from the lock
# (a package left over from an older install is listed).
$(STAMP): $(LOCK) pyproject.toml env/install.sh
	PYTHON=$(PYTHON) env/install.sh $(VENV) $(LOCK)
	$(BIN)/python -m pip install --quiet --no-compile --no-deps --no-build-isolation -e .
	$(BIN)/python -m medlens.environment check
	touch $@

# Re-resolve the lock: every package the pipeline, the tests and the benchmarks install, on Python 3.11+
# (one universal file; Linux x86-64 is the platform tested), with hashes. Versions already in the lock are
# kept where they still fit; `make lock UPGRADE=1` takes the newest that fit. Another CUDA build of torch:
# README, "Another CUDA version".
lock:
	@test -x $(UV) || { echo "make lock runs uv from the environment: run make venv first, or pass UV=/path/to/uv" >&2; exit 1; }
	$(UV) pip compile pyproject.toml --all-extras --universal --python-version 3.11 --generate-hashes \
		--constraints $(CONSTRAINTS) --override $(OVERRIDES) $(if $(UPGRADE),--upgrade) \
		$(if $(TORCH_BACKEND),--torch-backend $(TORCH_BACKEND) --emit-index-url) \
		--custom-compile-command "make lock" --output-file $(LOCK)

dag: $(STAMP)
	@command -v dot >/dev/null || { echo "make dag needs Graphviz's dot: apt-get install graphviz (Debian/Ubuntu), brew install graphviz (macOS)" >&2; exit 1; }
	mkdir -p results
	$(BIN)/snakemake results/report.html --dag | dot -Tsvg > results/dag.svg.partial
	mv results/dag.svg.partial results/dag.svg

lint: $(STAMP)
	$(BIN)/ruff check src tests workflow/scripts benchmarks
	$(BIN)/ruff format --check src tests workflow/scripts benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint

clean:
	rm -rf results .snakemake
