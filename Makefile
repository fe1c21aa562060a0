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

.PHONY: setup demo test typecheck bench lock check-stack clean-data clean wheel cluster-test test-spark35 spark35-env

setup: $(STAMP)

$(STAMP): $(SETUP_INPUTS)
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: hitpredict needs Python 3.11 (set PYTHON=...)"; exit 1; }
	@command -v java >/dev/null || { echo "java not found: Spark needs Java 17 (apt-get install openjdk-17-jre-headless)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c conf/constraints.txt pip setuptools wheel
	$(PIP) install -c conf/constraints.txt -r conf/requirements.txt
	$(PIP) install --no-deps -c conf/constraints.txt tf-keras
	$(PIP) install --no-deps -c conf/constraints.txt musicnn
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

# The wheel a cluster or Databricks installs: dist/hitpredict-<version>-py3-none-any.whl (the package, its
# console entry points, the shipped configs). `databricks bundle deploy` runs this target. It needs only
# pip: the venv's when `make setup` made one, else $(PYTHON)'s (an isolated build, which fetches setuptools).
# build/ goes first: setuptools would copy stale modules from an earlier build into the wheel.
WHEEL_BUILD = $(if $(wildcard $(PY)),$(PIP) wheel --no-build-isolation,$(PYTHON) -m pip wheel)
wheel:
	rm -rf build lib/hitpredict.egg-info dist/hitpredict-*.whl
	$(WHEEL_BUILD) -q --no-deps -w dist .
	@ls dist/hitpredict-*.whl

# A standalone Spark cluster (a master and 2 one-core workers on 127.0.0.1, started from the pip pyspark):
# every stage spark-submitted with the built wheel, its tables compared with a local-mode run; every
# process it starts is stopped by pid (tests/cluster). Prints the wall times; summary in /tmp/cluster/summary.txt.
cluster-test: setup wheel
	$(PY) -m pytest -q -rP tests/cluster $(PYTEST_ARGS)

# The data-plane, dataset and scoring tests on pyspark 3.5 (Databricks 15.4 LTS ML) in a second venv.
# .venv-spark35 holds only the packages pinned in conf/constraints-spark35.txt (pyspark, pandas, pyarrow,
# numpy and the scipy/scikit-learn/matplotlib builds that run on that numpy). A .pth line appends the main
# .venv's site-packages AFTER its own, so its versions win and TensorFlow, Horovod, deltalake, librosa,
# mlflow and pytest are not installed twice. tests/test_environment.py proves which versions ran; mypy
# checks lib/ against pyspark 3.5's type hints (a Spark 4-only method such as DataFrame.toArrow fails it).
VENV35 := .venv-spark35
PY35   := $(VENV35)/bin/python
STAMP35 := $(VENV35)/.setup-$(shell cat conf/constraints-spark35.txt Makefile 2>/dev/null | sha1sum | cut -c1-12)
SPARK35_TESTS ?= tests/test_environment.py tests/test_dataset.py tests/test_data_plane.py tests/test_scoring.py

$(STAMP35): conf/constraints-spark35.txt Makefile $(STAMP)
	test -x $(PY35) || $(PYTHON) -m venv $(VENV35)
	$(PY35) -m pip --disable-pip-version-check install -q --no-deps -r conf/constraints-spark35.txt
	$(PY35) -c 'import pathlib, sys, sysconfig; pathlib.Path(sysconfig.get_paths()["purelib"], "zz-hitpredict-main-venv.pth").write_text("import site; site.addsitedir(%r)\n" % sys.argv[1])' \
		"$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
	$(PY35) -c 'import hitpredict, pyspark; assert pyspark.__version__.startswith("3.5."), pyspark.__file__'
	rm -f $(VENV35)/.setup-*
	touch $@

spark35-env: setup $(STAMP35)

test-spark35: setup $(STAMP35)
	@$(PY35) -c 'import numpy, pandas, pyarrow, pyspark, sys; print("test-spark35: python %s, pyspark %s, pandas %s, pyarrow %s, numpy %s" % (sys.version.split()[0], pyspark.__version__, pandas.__version__, pyarrow.__version__, numpy.__version__))'
	$(PY35) -m mypy --cache-dir $(VENV35)/.mypy_cache   # lib/ against pyspark 3.5's own type hints
	PYSPARK_PYTHON=$(abspath $(PY35)) PYSPARK_DRIVER_PYTHON=$(abspath $(PY35)) \
		HITPREDICT_CONSTRAINTS=conf/constraints-spark35.txt $(PY35) -m pytest $(SPARK35_TESTS) $(PYTEST_ARGS)

# bench/real_audio.py downloads Debian packages (about 830 MB, first run) and trains every family: run it
# by hand; bench/real_audio_catalogue.py is its builder module, not a benchmark; bench/embedding_choice.py
# reads a finished real_audio run; bench/scale.py runs the pipeline on 1,000 and 10,000 tracks (about 9 GB
# under data/bench-scale): run those two by hand too.
BENCHES := $(filter-out bench/real_audio.py bench/real_audio_catalogue.py bench/embedding_choice.py \
             bench/embed_head_choice.py bench/scale.py,$(wildcard bench/*.py))
bench: setup
	@for script in $(BENCHES); do echo "== $$script"; $(PY) $$script || exit 1; done

check-stack: setup
	$(PY) -m hitpredict.cli check-stack

# Re-resolve the pinned set after editing conf/requirements.txt (needs the registry).
lock: setup
	$(PIP) freeze --exclude-editable | grep -vE '^(tensorflow==|hitpredict)' > conf/constraints.lock.new
	@echo "review conf/constraints.lock.new, then move it over conf/constraints.txt (keep pip/setuptools/wheel pins)"

clean-data:
	rm -rf lakehouse mlflow.db mlartifacts mlruns data

clean: clean-data
	rm -rf $(VENV) .venv-spark35 build *.egg-info lib/*.egg-info
