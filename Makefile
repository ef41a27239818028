# One venv (.venv) for everything. `install` is stamped on pyproject.toml, so a second
# `make test` or `make smoke-test` installs nothing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: install browser test test-fast test-slow smoke-test twin-test journey journey-smoke lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU wheel first where the machine has it, so pip never pulls a multi-GB CUDA build;
	# elsewhere the normal torch.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0 || $(PY) -m pip install -q torch
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

# The console tests drive the page in Debian's headless Chromium; installed once (apt, as root).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
	  || { echo "install Debian's chromium (apt-get install chromium) for the console tests" >&2; exit 2; }

# everything but the slow learning checks (pyproject.toml's addopts: -m 'not slow'); what CI runs
test: install browser
	$(PY) -m pytest -q tests

# the inner loop, under 2 minutes: no Ray, no package CLI in a subprocess, nothing heavy
# (the markers: pyproject.toml)
test-fast: install
	$(PY) -m pytest -q -m "not slow and not ray and not subprocess and not heavy" tests

test-slow: install
	$(PY) -m pytest -q -m slow tests

smoke-test: install
	$(PY) -m hilserl_ray.smoke

# the real-arm path end to end through Ray against the twin (a simulated SO-101 on a pty)
twin-test: install
	$(PY) -m hilserl_ray.twin.rehearse

# the owner's journey (docs/real_arm.md) on the twin, calibration to export; one table of figures.
# journey-smoke: CI sizes, under 5 minutes; journey: issue 24's benchmark sizes
journey-smoke: install
	$(PY) -m hilserl_ray.twin.journey --smoke --out outputs/journey_smoke

journey: install
	$(PY) -m hilserl_ray.twin.journey --out outputs/journey

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: install
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) outputs .pytest_cache
