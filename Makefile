# Two commands on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
R1     := $(VENV)/bin/r1
STAMP  := $(VENV)/.installed
# when this make started: `make demo` reports its own total, install included
T0     := $(shell date +%s)

# pytest-xdist workers for `make test` / `make test-all` (TEST_JOBS=0: one process). --dist loadscope
# keeps each test module on one worker, so a module's fixtures (a trained run, a server) are made once.
TEST_JOBS ?= 2
PYTEST := $(PY) -m pytest -q $(if $(filter-out 0 1,$(TEST_JOBS)),-n $(TEST_JOBS) --dist loadscope)

.PHONY: install demo test test-all bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -m pip install -q --no-deps 'tritonclient>=2.40'  # its model-config protobuf and HTTP client (deps: the dev extra)
	$(PY) -m pip install -q --no-deps 'executorch==1.5.1' 'ruamel.yaml>=0.18' 'torchao==0.18.0'  # the mobile extra (see pyproject.toml)
	touch $(STAMP)


demo: install
	$(R1) pipeline recipes/quickstart.yaml
	@echo "results: runs/quickstart/report.md (+ report.json, report/*.png); one run dir per stage in runs/quickstart/"
	@echo "the r1 command of this checkout: bin/r1 --help (or: source .venv/bin/activate; r1 --help)"
	@echo "make demo: $$(( $$(date +%s) - $(T0) )) s in all (install included), on $$(getconf _NPROCESSORS_ONLN) CPU core(s), load average $$(uptime | sed 's/.*load average[s]*: //')"

test: install
	$(PY) -m ruff check r1 tests benchmarks examples
	$(PYTEST)

test-all: install
	$(PY) -m ruff check r1 tests benchmarks examples
	$(PYTEST) -m ''

clean:
	rm -rf runs .pytest_cache
