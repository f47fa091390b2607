# Two commands work on a fresh clone: `make demo` and `make test`. Each creates .venv and
# installs what it needs when missing (re-installing when pyproject.toml changes).
# `make test` is everything, as root: the Debian packages (tests/host/setup), lint, the
# Kubernetes test clusters (up before pytest, down after it) and the whole suite with the
# clusters required. Fast paths: `make unit`, and `make test-local` (all but the cluster tests).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cairn-installed
LINT_BUILD := .build/lint

.PHONY: host venv test test-local test-ui unit lint demo clean cluster-up cluster-down cluster-status test-k8s

# The Debian packages the tests need; installs only the missing ones (root), else a dpkg query.
host:
	@tests/host/setup

# setuptools says "Editable installation ... be careful with folders in your working directory
# with the same name as your package" on every editable install of a package-dir mapping like
# ours (its meta path finder); it is information, not a problem of the configuration, and
# only that message is filtered. Any other warning still shows.
$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools>=69" wheel
	PYTHONWARNINGS="ignore:Editable installation:UserWarning" $(PY) -m pip install -q -e '.[test]'
	@touch $@

venv: $(STAMP)

# ruff checks the tree as it is. import-linter and mypy walk a package's own folder, while the
# tree maps sibling folders into cairn.*: so both check the built package, exactly as users
# install it (mypy keeps its cache beside it, so a second run takes seconds).
lint: venv
	$(VENV)/bin/ruff check .
	@rm -rf $(LINT_BUILD) build
	@$(PY) -m pip install -q --no-deps --no-build-isolation --target $(LINT_BUILD) .
	cd $(LINT_BUILD) && PYTHONPATH=. ../../$(VENV)/bin/lint-imports --config ../../pyproject.toml
	cd $(LINT_BUILD) && ../../$(VENV)/bin/mypy --config-file ../../pyproject.toml --cache-dir ../mypy-cache -p cairn

unit: venv
	$(PY) -m pytest tests/unit

# The clusters come up before pytest (a cold build of their binaries takes longer than a
# test's timeout) and go down when it ends, however it ends; CAIRN_REQUIRE_K8S=1 makes a
# missing cluster a failure, never a skip (tests/cluster/fixture.py).
test: host venv lint
	CAIRN_REQUIRE_K8S=1 tests/cluster/with-clusters $(PY) -m pytest

# Everything but the cluster tests; no cluster is started or needed.
test-local: host venv lint
	$(PY) -m pytest -m "not k8s"

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
