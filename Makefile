# The two commands of the README:
#   make report   builds results/report.html (creates .venv on first use)
#   make test     runs the test suite in the same environment
PYTHON      ?= python3
VENV        ?= .venv
CONSTRAINTS ?= constraints.txt
PROFILE     ?= profiles/local
BIN         := $(VENV)/bin
# A stamp that changes whenever what is installed would change.
STAMP       := $(VENV)/.medlens-installed

.PHONY: report test venv dag lint clean

report: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/snakemake --profile $(PROFILE) results/report.html

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

venv: $(STAMP)

# pip compiles the bytecode of every installed file in one process; compileall does it on every core
# (install 2:37 -> 2:25 on 2 cores, docs/benchmarks.md). The bytecode must exist up front: where
# PYTHONDONTWRITEBYTECODE is set, nothing compiled at import is kept, and every job would compile torch
# again. A file only newer Pythons parse (torch ships one) fails to compile, as it does under pip.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -c $(CONSTRAINTS) -e ".[test]"
	$(BIN)/python -m compileall -qq -j 0 $(VENV)/lib || true
	touch $@

dag: $(STAMP)
	$(BIN)/snakemake results/report.html --dag | dot -Tsvg > results/dag.svg

lint: $(STAMP)
	$(BIN)/ruff check src tests workflow/scripts benchmarks
	$(BIN)/snakemake --lint

clean:
	rm -rf results .snakemake
