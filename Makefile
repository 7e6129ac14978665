# The two commands: `make quickstart` and `make test`. Both create .venv (with tfm installed) when missing.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
# Quiet TensorFlow's C++ start-up chatter in everything the Makefile runs.
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: quickstart test test-fast clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/tfm quickstart

test: $(STAMP)
	$(VENV)/bin/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder -q

# The fast subset for iteration: everything not marked slow.
test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder -q -m "not slow"

clean:
	rm -rf $(VENV) build *.egg-info
