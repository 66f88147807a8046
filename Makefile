# Two commands on a fresh machine with only Python >= 3.11 and pip:
#   make run    set up .venv and curate the embedded sample (data_samples/raw -> out/)
#   make test   set up .venv and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test golden schemas docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: 2.13.0 is the CPU build; a looser pin pulls a CUDA build of several GB
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[train,dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/curate run data_samples/raw out --force --no-gate

test: $(STAMP)
	$(BIN)/python -m pytest

golden: $(STAMP)
	UPDATE_GOLDEN=1 $(BIN)/python -m pytest tests/test_golden.py tests/test_report_golden.py

schemas: $(STAMP)
	$(BIN)/python -m curator.schema > schemas/chat_record.schema.json

docs: $(STAMP)
	$(BIN)/python -m curator.stages.registry docs/ARCHITECTURE.md

clean:
	rm -rf $(VENV) out
