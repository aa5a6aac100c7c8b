# The two commands of the README: `make demo` and `make test`. Both create the virtual
# environment from pyproject.toml + constraints.txt first (once; again when either file changes).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# e.g. https://download.pytorch.org/whl/cpu: torch's CPU wheel instead of PyPI's CUDA build.
TORCH_INDEX_URL ?=
PIP_INDEX := $(if $(TORCH_INDEX_URL),--extra-index-url $(TORCH_INDEX_URL))

.PHONY: demo test lint install clean

$(BIN)/recsys-installed: pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q $(PIP_INDEX) -c constraints.txt -e ".[dev]"
	touch $@

install: $(BIN)/recsys-installed

demo: install  ## the whole loop on MovieLens-100K through the Airflow scheduler
	$(BIN)/recsys demo --reset

test: install  ## the test suite
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .recsys
