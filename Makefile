PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATASETS ?= ../shared/datasets

.PHONY: install test lint demo bench clean

# pyradiomics ships no wheel for this Python: its sdist builds against the numpy and versioneer
# already installed (no build isolation), so those come first, with wheel for its bdist_wheel.
$(BIN)/braincam: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q numpy versioneer wheel
	$(BIN)/pip install -q --no-build-isolation "pyradiomics==3.0.1"
	$(BIN)/pip install -q -e ".[dev,radiomics]"
	touch $@

install: $(BIN)/braincam

# One torch thread per test process, two processes: small tensors gain nothing from intra-op
# threads, and two single-threaded workers use both cores of a 2-core CI machine.
test: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2

lint: install
	$(BIN)/ruff check src tests

demo: install
	$(BIN)/braincam demo --out runs/demo --force

bench: install
	$(BIN)/braincam bench cam --arch resnet50 --batch 16
	$(BIN)/braincam bench occlusion

clean:
	rm -rf $(VENV) runs .pytest_cache
