# The two commands of the README:
#   make report   builds results/report.html (creates .venv from the lock on first use)
#   make test     runs the test suite in the same environment
# and the one that changes the environment on purpose:
#   make lock     re-resolves requirements.lock from pyproject.toml and constraints.txt
PYTHON      ?= python3
VENV        ?= .venv
LOCK        ?= requirements.lock
CONSTRAINTS ?= constraints.txt
PROFILE     ?= profiles/local
BIN         := $(VENV)/bin
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

# The environment is exactly the lock: every package at its locked version and hash, nothing resolved
# on the day (--no-deps), then medlens itself without dependencies. `medlens.environment check` fails
# when the result differs from the lock (a package left over from an older install is listed), and the
# lock used is kept in the venv so that reports and `medlens info` can name it.
# Bytecode is compiled on every core after the install (pip does it in one process, 2:37 -> 2:25 on 2
# cores): where PYTHONDONTWRITEBYTECODE is set nothing compiled at import is kept, and every job would
# compile torch again. A file only newer Pythons parse (torch ships one) fails to compile, as under pip.
$(STAMP): $(LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-compile --require-hashes --no-deps -r $(LOCK) 2>&1 \
		| { grep -v "is ignored: it is neither a file nor a directory" || true; }
	$(BIN)/python -m pip install --quiet --no-compile --no-deps --no-build-isolation -e .
	cp $(LOCK) $(VENV)/medlens.lock
	$(BIN)/python -m medlens.environment check --lock $(VENV)/medlens.lock
	$(BIN)/python -m compileall -qq -j 0 $(VENV)/lib || true
	touch $@

# Re-resolve the lock: every package the pipeline, the tests and the benchmarks install, on Python 3.11+
# (one universal file; Linux x86-64 is the platform tested), with hashes. Versions already in the lock are kept where they still fit;
# `make lock UPGRADE=1` takes the newest that fit. For another CUDA build of torch, see the README.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --all-extras --universal --python-version 3.11 --generate-hashes \
		--constraints $(CONSTRAINTS) $(if $(UPGRADE),--upgrade) \
		$(if $(TORCH_BACKEND),--torch-backend $(TORCH_BACKEND) --emit-index-url) \
		--custom-compile-command "make lock" --output-file $(LOCK)

dag: $(STAMP)
	@command -v dot >/dev/null || { echo "make dag needs Graphviz's dot: apt-get install graphviz (Debian/Ubuntu), brew install graphviz (macOS)" >&2; exit 1; }
	mkdir -p results
	$(BIN)/snakemake results/report.html --dag | dot -Tsvg > results/dag.svg.partial
	mv results/dag.svg.partial results/dag.svg

lint: $(STAMP)
	$(BIN)/ruff check src tests workflow/scripts benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint

clean:
	rm -rf results .snakemake
