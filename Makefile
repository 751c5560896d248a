# The two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: venv demo test services lab clean

venv: $(STAMP)

# The interpreter check and the bare venv, shared by both installs.
$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "logqueue needs Python 3.11 or newer; run e.g. 'make PYTHON=python3.11 $(MAKECMDGOALS)'"; exit 1; }
	@$(PYTHON) -m venv $(VENV) || \
		{ rm -rf $(VENV); echo "could not create .venv; on Debian/Ubuntu: sudo apt install python3-venv"; exit 1; }

# Everything (make test, make lab); it covers the demo's install too.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[all]'
	touch $(STAMP) $(DEMO_STAMP)

# What the demo needs (the brokers' clients, the report's plots): a first look installs
# no test or notebook tools.
$(DEMO_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[brokers,experiments,fast]'
	touch $(DEMO_STAMP)

# Start the local brokers the tests talk to, if one of them has stopped.
services:
	scripts/ensure-services

demo: $(DEMO_STAMP)
	$(PY) -m experiments demo

# The whole suite in two processes (tests/conftest.py keeps each module's tests in one process),
# then, on the idle machine, the tests marked `alone` (a system under test that fails under load:
# see tests/conftest.py). It lists its slowest tests; the budget is 15 minutes on 2 cores.
test: venv services
	$(PY) -m pytest -q -n 2 --dist loadgroup -m "not alone" --durations=20
	$(PY) -m pytest -q -m alone || [ $$? -eq 5 ]

# Open the analysis notebooks in JupyterLab (root, e.g. in a container, needs --allow-root).
lab: venv
	$(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
