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

# --no-compile: Python compiles a module's bytecode when it is first imported, instead of pip compiling
# every file of torch & co. up front (install 2:37 -> 1:30 here, docs/benchmarks.md)
$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -c $(CONSTRAINTS) -e ".[test]"
	touch $@

dag: $(STAMP)
	$(BIN)/snakemake results/report.html --dag | dot -Tsvg > results/dag.svg

lint: $(STAMP)
	$(BIN)/ruff check src tests workflow/scripts benchmarks
	$(BIN)/snakemake --lint

clean:
	rm -rf results .snakemake
