# Two commands from a fresh clone: `make demo` and `make test`.
# Each creates its own virtual environment in .venv (needs only python3 >= 3.11 and make).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,widgets]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m cmdseg_nb demo $(if $(MAPPING),--mapping $(MAPPING),)

test: $(STAMP)
	bash scripts/ensure-chromium.sh
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info cmdseg_nb.egg-info out
