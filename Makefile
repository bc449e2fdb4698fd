# The README's two commands, `make demo` and `make test`, set everything up from a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The constraints pin torch to the CPU build already on the machine (see constraints.txt). pip
# byte-compiles what it installs: where PYTHONDONTWRITEBYTECODE is set (as on our machines),
# nothing else would, and every process would compile torch again (7 s an import instead of 1.5).
INSTALL := $(PIP) install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test docs lint format bench release clean

$(VENV)/.installed: core/pyproject.toml core/src/trainwright/_version.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(INSTALL) -e 'core[dev]'
	touch $@

# Render the template with the default answers, install the project, train it, plot the run.
# The project pins the core release (core_source=index), which .venv's editable core/ satisfies:
# the demo runs this checkout's core as it is, and pip leaves the editable install in place.
DEMO := build/demo
DEMO_RUN := $(DEMO)/runs/demo
demo: $(VENV)/.installed
	rm -rf $(DEMO)
	$(PY) -m copier copy --defaults --quiet --vcs-ref=HEAD --data core_source=index . $(DEMO)
	$(INSTALL) -e '$(DEMO)[plot]'
	$(PY) -m my_trainer fit --max-epochs=2 --accelerator=cpu --run-dir=$(DEMO_RUN)
	$(PY) -m my_trainer plot $(DEMO_RUN)
	@echo
	@echo "The project is in $(DEMO): edit src/my_trainer/, then run its tests with:"
	@echo "  cd $(DEMO) && ../../$(PY) -m pytest"

# The tests run two at a time (pytest-xdist), in the order tests/conftest.py gives them (heaviest first),
# with the modules it groups each on one worker.
test: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict
	$(PY) -m pytest -n 2 --no-loadscope-reorder

# Serve the documentation site at http://127.0.0.1:8000, rebuilt on every change.
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(VENV)/.installed
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# Lightning is installed only here, to measure against it; nothing else depends on it.
$(VENV)/.bench-installed: $(VENV)/.installed
	$(INSTALL) 'lightning>=2.6,<2.7'
	touch $@

bench: $(VENV)/.bench-installed
	$(PY) benchmarks/run.py

# Tag vX.Y.Z on HEAD after checking that it is a release: a clean tree, the same version in core/
# and copier.yml, and a CHANGELOG entry for it (.ci/release.py; docs/releasing.md).
release:
	$(PYTHON) .ci/release.py

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache
