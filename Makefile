# Two entry points (see README):
#   make course   set up .venv, run the whole course headless into course-output/
#   make test     set up .venv, run the package tests and the notebooks under nbval (smoke mode)
#   make site     the course as a static web site in site-output/ (from the committed outputs)
# .venv gets the package with the dev extra (tests) and the cluster extra (submitit, for the
# lab's `reproduce --jobs N`), so that make test (and CI) runs the lab's fan-out tests too.
#
# Which PyTorch build .venv gets (README, "Install size"):
# * Linux without an NVIDIA GPU (no nvidia-smi, no /proc/driver/nvidia): the CPU-only
#   build from PyTorch's CPU wheel index, about a quarter of the CUDA build's size;
# * Linux with an NVIDIA GPU, or GPU=1: PyPI's default build (CUDA);
# * macOS and others: PyPI's default build (CPU/MPS there).
# TORCH_INDEX overrides the index (TORCH_INDEX= uses PyPI and pip's own settings, as CI
# does for the wheel on its disk); TORCH_SPEC the requirement.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch>=2.2
PY := $(VENV)/bin/python
GPU ?= $(shell if command -v nvidia-smi >/dev/null 2>&1 || [ -e /proc/driver/nvidia/version ]; then echo 1; else echo 0; fi)
ifeq ($(shell uname -s)-$(GPU),Linux-0)
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
endif
TORCH_INDEX ?=

.PHONY: install course test clean check-python

# Before anything is installed: a Python that is too old fails here, in one line,
# not after a multi-GB torch download. (%-formatting: the check must run on old Pythons.)
check-python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python >= 3.11, or run make PYTHON=/path/to/python3.11 ..." >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "error: $(PYTHON) is Python %d.%d but starunet needs Python >= 3.11; install one, then run make PYTHON=python3.11 ... (and make clean if .venv exists)" % sys.version_info[:2])'

$(VENV)/.installed: pyproject.toml | check-python
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[dev,cluster]"
	touch $@

install: $(VENV)/.installed

course: install
	$(PY) -m starunet course --out course-output

# The smoke runs go to a temporary folder, removed afterwards (or to $STARUNET_RUNS if set,
# as CI sets it), so that make test leaves no runs in the checkout. It installs the site
# extra too: the unit tests of book/ (tests/test_site.py) need Sphinx and docutils.
test: install $(VENV)/.site-installed
	@runs="$${STARUNET_RUNS:-$$(mktemp -d)}"; \
	STARUNET_RUNS="$$runs" STARUNET_SMOKE=1 $(PY) -m pytest --nbval-lax --nbval-current-env tests notebooks; \
	status=$$?; [ -n "$$STARUNET_RUNS" ] || rm -rf "$$runs"; exit $$status

# The web site (book/, Jupyter Book 1): the site extra on top of install, then the book
# built from the notebooks' committed outputs (nothing is run) into site-output/.
$(VENV)/.site-installed: $(VENV)/.installed
	$(PY) -m pip install -e ".[site]"
	touch $@

.PHONY: site
site: $(VENV)/.site-installed
	$(PY) book/build.py --out site-output

# The browser tests (tests/browser, deselected by `make test`), with Playwright in Debian's
# chromium (apt-get install chromium); minutes: the widgets in JupyterLab on 127.0.0.1, and
# the web site built into a temporary folder and served on 127.0.0.1 (so the site extra too).
.PHONY: browser-test
browser-test: install $(VENV)/.site-installed
	@runs="$${STARUNET_RUNS:-$$(mktemp -d)}"; \
	STARUNET_RUNS="$$runs" STARUNET_SMOKE=1 $(PY) -m pytest -m browser tests/browser; \
	status=$$?; [ -n "$$STARUNET_RUNS" ] || rm -rf "$$runs"; exit $$status

clean:
	rm -rf $(VENV) course-output site-output .pytest_cache
