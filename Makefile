# Two commands work from a fresh clone: `make demo` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin

# Offline settings the stack needs, set by the project (the CLI sets the same defaults).
export NO_ALBUMENTATIONS_UPDATE := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DO_NOT_TRACK := 1
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 180
export PREFECT_LOGGING_LEVEL ?= WARNING
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-slow test-data bench clean

setup:
	@VENV=$(VENV) ./scripts/bootstrap.sh

demo: setup
	$(BIN)/macl demo --workspace demo_workspace

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

test-data: setup
	$(BIN)/python -m pytest -q -m data

clean:
	rm -rf demo_workspace .prefect .pytest_cache .hypothesis
