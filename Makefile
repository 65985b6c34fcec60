# Two commands a newcomer needs: `make demo` and `make test`.
# Everything installs into ./.venv from this project's own files.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# pip's exit status survives the pipe into the progress filter
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: demo test test-unit test-busy up bench sim replay clean synth layers deploy-check coverage-aws

$(STAMP): pyproject.toml
	@echo "[1/3] creating $(VENV) with $$($(PYTHON) --version)"
	@$(PYTHON) -m venv $(VENV)
	@echo "[2/3] upgrading pip"
	@$(BIN)/pip install --quiet --upgrade pip
	@echo "[3/3] installing the service, its tests and its tools into $(VENV) (a few minutes the first time; each package as it comes)"
	@$(BIN)/pip install --progress-bar off -e '.[demo,dev]' 2>&1 | INSTALL_LOG=$(VENV)/install.log $(PYTHON) tools/install_progress.py
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/infaas demo

up: $(STAMP)
	$(BIN)/infaas up

# pytest exits 5 when it collects nothing: that is a failure of the suite here,
# so it is reported as such rather than passed through silently.
# TEST_WORKERS > 0 runs the suite in that many processes (pytest-xdist, whole groups to each: a file,
# or tests/infrastructure with tests/integration, which build into shared folders: tests/conftest.py).
# The default is one process: the groups hold under two since tests/conftest.py gives them to xdist's
# scheduler itself, but how much two save with the shared-build group on one process is not measured
# on a quiet machine yet. $(ALONE) runs the README's deploy block as written, which reinstalls this
# project into $(VENV), which every other test runs from: it runs alone, after them.
TEST_WORKERS ?= 0
ALONE := tests/infrastructure/test_readme_deploy.py
test: $(STAMP)
	$(BIN)/python -m pytest tests -n $(TEST_WORKERS) --dist loadgroup --ignore=$(ALONE); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests were collected"; exit 1; fi; [ $$rc -eq 0 ] || exit $$rc; \
	$(BIN)/python -m pytest $(ALONE); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests were collected in $(ALONE)"; exit 1; fi; exit $$rc

# The suite while other processes keep every core busy, as on a shared CI machine.
test-busy: $(STAMP)
	$(BIN)/python .ci/busy.py -- $(MAKE) --no-print-directory test

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit tests/architecture

# The benchmarks (docs/performance.md), then tests/load: the load ramp and the low-rate run (the autoscaler
# under load: rates derived from this machine's profiles, so it belongs here, not in `make test`).
# The bench extra (aiohttp, the second client of bench/run.py) goes into $(VENV) first, once.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	@echo "installing the bench extra (aiohttp) into $(VENV)"
	@$(BIN)/pip install --quiet -e '.[demo,dev,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python bench/run.py
	INFAAS_LOAD_TESTS=1 $(BIN)/python -m pytest tests/load -s -q

# The trace-driven comparison of docs/evaluation.md (reads the data `infaas sim data fetch`
# downloads, or --data / INFAAS_PROTEUS_DIR; about five minutes): rewrites its results and plots.
sim: $(STAMP)
	$(BIN)/infaas sim compare --all

# A Proteus trace replayed on a local stack of its own (2 cpu workers, the digits classifiers), time-scaled to
# what 2 cores carry, then through the simulator with the profiles the stack measured (docs/evaluation.md,
# "Live replay"; needs the data as `make sim` does; about three minutes).
REPLAY_ARGS ?= --workload zipf_exponential --rate 80 --duration 120
replay: $(STAMP)
	$(BIN)/infaas replay --local $(REPLAY_ARGS)

clean:
	rm -rf $(VENV) .infaas-data build

# The AWS deployment (docs/aws.md). `synth` needs no AWS account and no network:
# it writes the CloudFormation template to cdk.out/ and runs cdk-nag on it.
# `layers` builds the Lambda dependencies layer under build/layers/ without
# Docker (pip --platform manylinux2014_x86_64, binary wheels only).
# Every offline check of a deployment: the README's deploy block as far as it goes without an
# account (its synth with the deploy line's own -c context, in process and through the CDK CLI, also in
# another region and stack name), cdk-nag, cfn-lint, the layer's size, the IAM map and the metrics the alarms read.
# The deploy line also goes through the CDK CLI itself (`cdk synth` with its -c flags and cdk.json's app),
# installed with npm into .cdk-cli/ (ignored; pinned; never global). `make test` needs no npm: it skips that.
CDK_CLI_VERSION := 2.1149.0
CDK_CLI_STAMP   := .cdk-cli/.installed-$(CDK_CLI_VERSION)

$(CDK_CLI_STAMP):
	@echo "installing the CDK CLI $(CDK_CLI_VERSION) into .cdk-cli/ (npm)"
	@npm install --prefix .cdk-cli --no-audit --no-fund --loglevel=error aws-cdk@$(CDK_CLI_VERSION)
	@touch $(CDK_CLI_STAMP)

deploy-check: $(STAMP) $(CDK_CLI_STAMP)
	INFAAS_REQUIRE_CDK_CLI=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/infrastructure

synth: $(STAMP)
	JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 $(BIN)/python cdk/app.py
	@echo "template: cdk.out/Infaas.template.json"

layers: $(STAMP)
	$(BIN)/python layers/build.py --check

# Coverage of the AWS adapters and the Lambda handlers (docs/aws.md lists each line left uncovered and why):
# the moto-backed suites and the adapter contracts; fails under 95 %.
coverage-aws: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/integration tests/contract \
		--cov=infaas.adapters.aws --cov=functions --cov-report=term-missing --cov-fail-under=95
