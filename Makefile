# Two commands work on a fresh clone: `make demo` and `make test`. Each creates .venv and
# installs what it needs when missing (re-installing when pyproject.toml changes).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cairn-installed
LINT_BUILD := .build/lint

.PHONY: venv test test-ui unit lint demo clean cluster-up cluster-down cluster-status test-k8s

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools>=69" wheel
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

venv: $(STAMP)

# import-linter walks a package's own folder, while the tree maps sibling folders into
# cairn.*: so the contracts are checked on the built package, exactly as users install it.
lint: venv
	@rm -rf $(LINT_BUILD)
	@$(PY) -m pip install -q --no-deps --no-build-isolation --target $(LINT_BUILD) . 2>/dev/null
	cd $(LINT_BUILD) && PYTHONPATH=. ../../$(VENV)/bin/lint-imports --config ../../pyproject.toml

unit: venv
	$(PY) -m pytest tests/unit

test: venv lint
	$(PY) -m pytest

# The browser tests alone (Debian's chromium via Playwright; part of `make test` too).
test-ui: venv
	$(PY) -m pytest -m ui

demo: venv
	$(PY) examples/demo.py

clean:
	rm -rf .build $(VENV)

# The Kubernetes test clusters (tests/cluster/README.md): built from Go modules, cached outside the repo.
cluster-up:
	tests/cluster/up
cluster-down:
	tests/cluster/down
cluster-status:
	tests/cluster/status
test-k8s: venv
	CAIRN_REQUIRE_K8S=1 $(PY) -m pytest -m k8s
