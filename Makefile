# Two commands a newcomer needs: `make train` and `make test`. Both create .venv and install on first use.
VENV ?= .venv
BIN := $(VENV)/bin
# Named after pyproject.toml's content: a change of dependencies reinstalls, a fresh copy of the same
# project (another clone using this VENV) does not.
INSTALLED := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
PYTEST_FAST := -m "not slow and not multiprocess and not slurm and not container"
# Two tests at a time, a file's tests on one worker (its fixtures built once), files in collection order;
# tests that start several training processes run alone, after the others (tests/support/machine_share.py).
PYTEST_TWO_AT_A_TIME := -n 2 --dist loadfile --no-loadscope-reorder
# Extra arguments for the command a target runs (make test ARGS="-k resume"): from make's command line only,
# never from an environment variable of that common name (make's command line still wins over this line).
ARGS :=

.PHONY: help install train test test-fast test-containers lint format clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /\1\t/' | expand -t 18

$(INSTALLED):
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# This pair ships as local files on our machines; elsewhere pip downloads it (a CUDA build that also runs on CPU).
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(INSTALLED)  ## create .venv and install chainrule with its development tools

train: install  ## train the default experiment (digits MLP) and print its test metrics and run directory
	$(BIN)/chainrule-train $(ARGS)

test: install  ## the whole suite but the container tests: unit, multi-process (DDP) and SLURM tests
	$(BIN)/pytest -m "not container" $(PYTEST_TWO_AT_A_TIME) $(ARGS)

test-fast: install  ## unit tests only (under 3 minutes)
	$(BIN)/pytest $(PYTEST_FAST) $(PYTEST_TWO_AT_A_TIME) $(ARGS)

test-containers: install  ## build docker/Dockerfile with podman; train, eval, DDP in containers (root)
	$(BIN)/pytest -m container tests/docker $(ARGS)

lint: install  ## ruff, the architecture contract (import-linter), hadolint on the container files
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/hadolint docker/Dockerfile docker/local/Containerfile.debian

format: install  ## fix what ruff can: import order, modern syntax
	$(BIN)/ruff check --fix src tests benchmarks

clean:  ## remove run outputs of commands run from here
	rm -rf logs outputs multirun wandb .pytest_cache
