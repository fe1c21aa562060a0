# hitpredict: the two commands a newcomer needs are `make demo` and `make test`.
# Both install everything first (idempotent: a second run on a ready machine takes
# seconds, because a stamp file records the exact inputs of the last good install).

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
CONF   ?= conf/local.yaml
PYTEST_ARGS ?=

# Every process that may touch Keras uses Keras 2 (tf-keras): see lib/hitpredict/keras_compat.py.
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))

# Horovod 0.28.1 built against TensorFlow 2.16 with gloo on CPU (no MPI, no PyTorch/MXNet).
# GPU clusters add HOROVOD_GPU_OPERATIONS=NCCL.
HOROVOD_BUILD_ENV := HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
	HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_CPU_OPERATIONS=GLOO

SETUP_INPUTS := conf/requirements.txt conf/constraints.txt setup.py Makefile
STAMP := $(VENV)/.setup-$(shell cat $(SETUP_INPUTS) 2>/dev/null | sha1sum | cut -c1-12)

.PHONY: setup demo test typecheck bench lock check-stack clean-data clean wheel cluster-test test-spark35

setup: $(STAMP)

$(STAMP): $(SETUP_INPUTS)
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: hitpredict needs Python 3.11 (set PYTHON=...)"; exit 1; }
	@command -v java >/dev/null || { echo "java not found: Spark needs Java 17 (apt-get install openjdk-17-jre-headless)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c conf/constraints.txt pip setuptools wheel
	$(PIP) install -c conf/constraints.txt -r conf/requirements.txt
	$(PIP) install --no-deps -c conf/constraints.txt tf-keras
	$(HOROVOD_BUILD_ENV) $(PIP) install --no-build-isolation --no-deps -c conf/constraints.txt horovod
	$(PIP) install -q --no-deps -e .
	$(PY) -m hitpredict.cli check-stack --imports-only
	rm -f $(VENV)/.setup-*
	touch $@

demo: setup
	$(PY) -m hitpredict.cli demo --conf $(CONF)

test: setup typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

# mypy over lib/ (mypy.ini): every method a stage calls on a Lake must exist on the interface.
typecheck: setup
	$(PY) -m mypy

# The wheel a cluster or Databricks installs: dist/hitpredict-<version>-py3-none-any.whl.
wheel: setup
	rm -rf dist build lib/hitpredict.egg-info
	$(PIP) wheel -q --no-deps --no-build-isolation -w dist .

# A standalone Spark cluster (master + 2 workers on 127.0.0.1): every stage spark-submitted with the wheel.
cluster-test: setup wheel
	$(PY) -m pytest -q tests/cluster $(PYTEST_ARGS)

# The data-plane, dataset and scoring tests on pyspark 3.5 (Databricks 15.4 LTS ML) in a second venv.
test-spark35: setup
	@echo "test-spark35: not written yet"; exit 1

bench: setup
	@for script in $(wildcard bench/*.py); do echo "== $$script"; $(PY) $$script || exit 1; done

check-stack: setup
	$(PY) -m hitpredict.cli check-stack

# Re-resolve the pinned set after editing conf/requirements.txt (needs the registry).
lock: setup
	$(PIP) freeze --exclude-editable | grep -vE '^(tensorflow==|hitpredict)' > conf/constraints.lock.new
	@echo "review conf/constraints.lock.new, then move it over conf/constraints.txt (keep pip/setuptools/wheel pins)"

clean-data:
	rm -rf lakehouse mlruns data

clean: clean-data
	rm -rf $(VENV) build *.egg-info lib/*.egg-info
