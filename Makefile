# Two commands do all the set-up on a fresh machine with only python3: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel of torch that lies on the development machine's disk; GPU users install their own build first.
TORCH_PIN ?= torch==2.13.0
DEMO_DIR ?= demo-output

.PHONY: demo test lint bench clean

$(BIN)/tubelet: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet "$(TORCH_PIN)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(BIN)/tubelet

demo: $(BIN)/tubelet
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh "$(DEMO_DIR)"

test: $(BIN)/tubelet
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench: $(BIN)/tubelet
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
