# Two commands a newcomer needs: `make demo` and `make test`.
# Everything installs into ./.venv from this project's own files.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-unit up bench sim clean synth layers

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[demo,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/infaas demo

up: $(STAMP)
	$(BIN)/infaas up

# pytest exits 5 when it collects nothing: that is a failure of the suite here,
# so it is reported as such rather than passed through silently.
test: $(STAMP)
	$(BIN)/python -m pytest tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests were collected"; exit 1; fi; exit $$rc

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit tests/contract

bench: $(STAMP)
	$(BIN)/python bench/run.py

# The trace-driven comparison of docs/evaluation.md (reads ../shared/data/proteus
# or INFAAS_PROTEUS_DIR; about five minutes): rewrites its results and plots.
sim: $(STAMP)
	$(BIN)/infaas sim compare --all

clean:
	rm -rf $(VENV) .infaas-data build

# The AWS deployment (docs/aws.md). `synth` needs no AWS account and no network:
# it writes the CloudFormation template to cdk.out/ and runs cdk-nag on it.
# `layers` builds the Lambda dependencies layer under build/layers/ without
# Docker (pip --platform manylinux2014_x86_64, binary wheels only).
synth: $(STAMP)
	JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 $(BIN)/python cdk/app.py
	@echo "template: cdk.out/Infaas.template.json"

layers: $(STAMP)
	$(BIN)/python layers/build.py --check
