# The two commands of the README: `make demo` and `make test`.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck unit bench install

$(VENV)/.installed: pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/driftline demo

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	bash scripts/typecheck.sh
	bash scripts/lint-imports.sh

typecheck: $(VENV)/.installed
	bash scripts/typecheck.sh

# pytest-xdist: one worker per core, at most 4 (each integration worker starts its own broker, 512 MB heap);
# --dist loadgroup keeps the tests of one xdist_group (the podman builds) on one worker.
PYTEST_PARALLEL := -n auto --maxprocesses 4 --dist loadgroup

# The whole suite, integration tests against a real Apache Kafka broker included.
test: $(VENV)/.installed
	bash scripts/system-deps.sh
	$(BIN)/driftline broker --fetch-only
	$(BIN)/ruff check .
	bash scripts/typecheck.sh
	bash scripts/lint-imports.sh
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL)

unit: $(VENV)/.installed
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL) tests/unit tests/contract

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/throughput.py --events 100000
