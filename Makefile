# otel-netreceiver: `make run` sets everything up and runs the agent (debug exporter);
# `make test` runs the whole test suite. Both need root (eBPF).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
CONFIG ?= config/default.yaml

.PHONY: all deps venv bpf run test unit clean

all: venv bpf

deps:
	./scripts/install-deps.sh $(DEPS_FLAGS)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

bpf:
	$(MAKE) -C bpf

run: deps all
	$(VENV)/bin/otel-netreceiver run --config $(CONFIG)

test: DEPS_FLAGS = --with-test-peers
test: deps all
	$(VENV)/bin/pytest -q -rs

unit: venv
	$(VENV)/bin/pytest -q tests/unit

clean:
	$(MAKE) -C bpf clean
	rm -rf $(VENV) build *.egg-info
