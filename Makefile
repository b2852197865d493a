# Two entry points (see README):
#   make course   set up .venv, run the whole course headless into course-output/
#   make test     set up .venv, run the package tests and the notebooks under nbval (smoke mode)
# TORCH_SPEC lets CI pick the CPU wheel that lies on its disk; users get the
# default torch build for their platform.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch>=2.2
PY := $(VENV)/bin/python

.PHONY: install course test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

course: install
	$(PY) -m starunet course --out course-output

test: install
	STARUNET_SMOKE=1 $(PY) -m pytest --nbval-lax --nbval-current-env tests notebooks

clean:
	rm -rf $(VENV) course-output .pytest_cache
