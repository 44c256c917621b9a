# vpsstack.celery task runner. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
# The checkout seen as ansible_collections/vpsstack/celery, for ansible, molecule and pytest.
COLLECTIONS := $(abspath .build/collections)
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export PATH := $(BIN):$(PATH)
export VPSSTACK_IMAGE ?= localhost/ubuntu-systemd:24.04
# Scenarios stay in molecule/ (the collection layout we publish); saying so keeps molecule from guessing.
export MOLECULE_GLOB := molecule/*/molecule.yml
SCENARIOS ?= $(sort $(notdir $(patsubst %/molecule.yml,%,$(wildcard molecule/*/molecule.yml))))

.PHONY: help venv collection test-host lint unit preflight sanity build molecule test demo demo-destroy bench bench-quick bench-converge reliability clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# uv installs the same pinned requirements from PyPI faster than pip (CI machine kind: 41 s with the bytecode
# compiled, beside a running test; pip 50-65 s alone). Compiled at install: without the .pyc files every first
# import pays it (lint and unit took 25 s longer). pip is the fallback where uv cannot be installed or reached.
$(VENV)/.stamp: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	{ $(BIN)/pip install -q uv && $(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -r requirements-dev.txt; } \
	  || $(BIN)/pip install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.stamp ## create the controller venv (ansible, molecule, linters)

collection: ## link the checkout as ansible_collections/vpsstack/celery under .build/
	@mkdir -p $(COLLECTIONS)/ansible_collections/vpsstack
	@ln -sfn ../../../.. $(COLLECTIONS)/ansible_collections/vpsstack/celery

test-host: ## install podman etc. and build the Ubuntu 24.04 systemd image (root)
	scripts/prepare-test-host.sh

lint: venv collection ## yamllint + ansible-lint (production profile) + argument_specs/defaults + README examples check
	yamllint --strict .
	ansible-lint --profile production
	$(BIN)/python scripts/check-argument-specs.py
	$(BIN)/python scripts/sizing-table.py --check README.md
	$(BIN)/python scripts/check-readme-examples.py

unit: venv collection ## unit and property tests of the filter plugins
	pytest -q tests/unit

preflight: venv collection ## each role's preflight names the bad variable (runs on this machine, check mode)
	pytest -q tests/preflight

sanity: venv ## ansible-test sanity on a copy of the collection
	scripts/sanity.sh

build: venv ## build the galaxy tarball, install it and run its roles by FQCN
	scripts/build-smoke.sh

molecule: venv collection ## every molecule scenario (or SCENARIOS="a b")
	@for s in $(SCENARIOS); do echo "== molecule test -s $$s"; molecule test -s $$s || exit 1; done

test: ## everything CI runs; prints a summary line
	scripts/run-tests.sh

demo: venv collection test-host ## a demo stack (redis, workers, beat, flower) in a local container limited to 1 GB / 1 vCPU
	molecule converge -s demo
	molecule verify -s demo

# BENCH_ARGS: e.g. --big (2 GB / 2 vCPU), --repeat 5, --variants stock,collection (benchmarks/stack_bench.py -h).
BENCH_ARGS ?=
bench: venv collection test-host ## stock vs collection side by side in 1 GB / 1 vCPU containers: table + chart in docs/benchmarks.md
	$(BIN)/pip install -q -r requirements-bench.txt
	$(BIN)/python benchmarks/stack_bench.py $(BENCH_ARGS)

bench-quick: venv collection test-host ## the same, small sizes, one round (a few minutes); output in .build/bench/
	$(BIN)/pip install -q -r requirements-bench.txt
	$(BIN)/python benchmarks/stack_bench.py --quick $(BENCH_ARGS)

# CONVERGE_ARGS: e.g. --repeat 5, --keep (benchmarks/converge_bench.py -h).
CONVERGE_ARGS ?=
bench-converge: venv collection test-host ## first and no-change converge over SSH vs a plain install script
	$(BIN)/python benchmarks/converge_bench.py $(CONVERGE_ARGS)

# Tasks per gevent scenario of `make reliability` (prefork scenarios get a tenth); molecule's verify runs 300.
N ?= 10000
reliability: venv collection test-host ## fault harness, full size (N=10000; N=...): converge, run, table into docs/reliability.md, destroy
	molecule destroy -s reliability
	molecule converge -s reliability
	RELIABILITY_N=$(N) RELIABILITY_ONLY=all RELIABILITY_MARKDOWN=$(abspath docs/reliability.md) \
	  molecule verify -s reliability; \
	rc=$$?; molecule destroy -s reliability; exit $$rc

demo-destroy: venv collection ## remove the demo containers
	molecule destroy -s demo

clean: ## remove build outputs (keeps the venv)
	rm -rf .build tests/output *.tar.gz
