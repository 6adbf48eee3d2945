# vpnlab: a TLS 1.3 VPN over TUN, and the lab that proves it works.
# `make` lists the targets: the text after `## ` on a target's line is its description.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

# PYTHON: the host interpreter that makes .venv; PY: the project's; BACKEND: docker, netns or
# swarm (a Docker swarm: `make swarm-up` makes a two-engine one on this machine).
PYTHON ?= python3
PY ?= .venv/bin/python
VPNLAB ?= .venv/bin/vpnlab
# PYTEST_ARGS and SCENARIO_ARGS: extra arguments, e.g. the JUnit reports CI keeps
# (PYTEST_ARGS=--junitxml=results/pytest.xml SCENARIO_ARGS="--junit results/scenarios.xml").
PYTEST_ARGS ?=
SCENARIO_ARGS ?=
# BACKENDS: the backends `make scenarios` runs every scenario on; WITH: extra compose files for
# `make up` (e.g. WITH=clients).
BACKENDS ?= docker netns
WITH ?=
BACKEND ?= docker
VENV_STAMP := .venv/.installed

# The Docker backend needs a Docker engine and the node image; the netns backend only the host's
# tools. Both get what is missing from scripts/deps.sh first, so a fresh machine's first command works.
LAB_NEEDS := $(if $(filter docker swarm,$(BACKEND)),deps-docker,deps-tools) venv \
	$(if $(filter docker swarm,$(BACKEND)),images)

.PHONY: help venv deps deps-tools deps-docker images up down scenario-basic scenario-list scenarios \
	test lint typecheck diagram bench clean swarm-up swarm-down bench-swarm

help: ## list the targets
	@echo "usage: make TARGET [BACKEND=docker|netns|swarm]"
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) \
		| awk -F':.*## ' '{ printf "  %-16s %s\n", $$1, $$2 }'

venv: $(VENV_STAMP) ## .venv with the pinned test tools and the project (editable)

$(VENV_STAMP): requirements/test.txt pyproject.toml
	$(PYTHON) -m venv .venv
	.venv/bin/pip install -q --disable-pip-version-check -r requirements/test.txt
	.venv/bin/pip install -q --disable-pip-version-check -e .
	@touch $@

deps: deps-docker ## host tools and a Docker engine (apt, only what is missing; dockerd started)

deps-tools:
	@scripts/deps.sh

deps-docker:
	@scripts/deps.sh --docker

images: venv ## build the node image offline (vpnlab/node); seconds when nothing changed
	@images/base/build.sh
	@PYTHON=$(PY) images/node/build.sh

up: $(LAB_NEEDS) ## bring the lab up and leave it running (BACKEND=docker|netns)
	$(VPNLAB) up --backend $(BACKEND) $(addprefix --with ,$(WITH)) --wait

down: venv ## take down every lab left up, and the test swarm, also after a crash
	@rc=0; $(VPNLAB) down --all || rc=$$?; $(PY) -m lab.backends.swarm down || rc=$$?; exit $$rc

swarm-up: deps-docker venv images ## a two-engine Docker swarm on this machine (for BACKEND=swarm)
	$(PY) -m lab.backends.swarm up

swarm-down: venv ## leave and remove the swarm swarm-up made (also after a crash)
	$(PY) -m lab.backends.swarm down

bench-swarm: deps-docker venv images ## N client containers over the swarm's engines (ARGS="--clients 200")
	$(PY) -m bench.swarm_scale $(ARGS)

scenario-basic: $(LAB_NEEDS) ## the basic scenario: reachability before and through the tunnel
	$(VPNLAB) scenario run basic --backend $(BACKEND) $(SCENARIO_ARGS)

scenarios: deps-docker venv images ## every scenario on both backends + a summary; one: make scenario-NAME
	$(VPNLAB) scenario run all $(addprefix --backend ,$(BACKENDS)) $(SCENARIO_ARGS)

scenario-%: $(LAB_NEEDS)  # one scenario by name, e.g. make scenario-tun-io
	$(VPNLAB) scenario run $* --backend $(BACKEND) $(SCENARIO_ARGS)

scenario-list: venv ## the scenarios, one line each
	$(VPNLAB) scenario list

test: deps venv ## lint and types, then every test: unit, netns and Docker (images first)
	@$(MAKE) lint
	@if docker info >/dev/null 2>&1; then $(MAKE) images; \
	else echo "test: no Docker engine answers: the Docker tests will skip"; fi
	@rc=0; $(PY) -m pytest tests -q $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "test: pytest collected no tests: that is a failure" >&2; fi; \
	exit $$rc

lint: venv typecheck ## ruff check, ruff format --check and mypy
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: venv ## mypy over vpn/ and lab/ (settings in pyproject.toml)
	$(PY) -m mypy

diagram: venv ## draw the lab's topology from compose/*.yml (docs/topology.svg and .png)
	$(VPNLAB) graph --format svg
	$(VPNLAB) graph --format png

bench: venv ## vpn vs plain routing vs OpenVPN in the netns lab (root; ARGS="--repeat 5")
	@$(PY) -c 'import matplotlib' 2>/dev/null \
		|| .venv/bin/pip install -q --disable-pip-version-check 'matplotlib>=3.8'
	$(PY) -m bench $(ARGS)

.PHONY: bench-scale
bench-scale: venv ## N clients on one gateway: handshakes/s, memory, fairness (ARGS="--clients 50")
	$(PY) -m bench.scale $(ARGS)

clean: ## remove build products, caches and .venv (images stay: docker rmi vpnlab/node)
	rm -rf .venv .cache build *.egg-info .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# -- test strength: mutation testing, fuzzing, soak and load (docs/testing.md) -------------------
# Not part of `make test`: each takes minutes. MUTATE_WORKERS: mutmut's parallel test runs;
# FUZZ_RUNS: fuzz inputs in all; SOAK_CYCLES (SOAK_DOCKER_CYCLES): lab cycles per backend;
# LOAD_CLIENTS, LOAD_MINUTES: the load run's sessions and length.
MUTATE_WORKERS ?= 1
FUZZ_RUNS ?= 1000000
SOAK_CYCLES ?= 100
SOAK_DOCKER_CYCLES ?= $(SOAK_CYCLES)
LOAD_CLIENTS ?= 1000
LOAD_MINUTES ?= 10

.PHONY: mutate fuzz soak load
mutate: venv ## mutation testing (mutmut, [tool.mutmut] in pyproject.toml) → results/mutation.json
	rm -rf mutants
	.venv/bin/mutmut run --max-children $(MUTATE_WORKERS) || echo "mutate: mutmut exited $$?"
	$(PY) scripts/mutation_report.py

fuzz: venv ## FUZZ_RUNS inputs into the frame, HELLO/CONFIG and vnet parsers (atheris) → results/fuzz.json
	$(PY) -m tests.fuzz.run --runs $(FUZZ_RUNS)

soak: deps-docker venv images ## SOAK_CYCLES lab up/down cycles per backend, kills and cuts; leftovers → results/soak.json
	$(PY) -m bench.soak --cycles $(SOAK_CYCLES) --docker-cycles $(SOAK_DOCKER_CYCLES)

load: deps-tools venv ## LOAD_CLIENTS sessions pinging through one gateway for LOAD_MINUTES → results/load.json
	$(PY) -m bench.load --clients $(LOAD_CLIENTS) --minutes $(LOAD_MINUTES)
