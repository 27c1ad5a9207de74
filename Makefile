# Ambry-py. `make run` starts a local 2-DC cluster; `make test` runs the whole suite.
# Both set up .venv first (Python >= 3.11 required on PATH as python3).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SRC_DEPS := pyproject.toml setup.py ambry/native/_cindex.c ambry/native/_crecord.c

.PHONY: all venv build run test test-c test-py faults bench bench-smoke lint clean distclean \
	docker-test

all: build

$(STAMP): $(SRC_DEPS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[test,dev,ec]'
	$(PY) setup.py --quiet build_ext --inplace
	@touch $(STAMP)

venv: $(STAMP)

build: $(STAMP)
	$(PY) setup.py --quiet build_ext --inplace

run: build
	$(VENV)/bin/ambry cluster up --config config/local.yaml $(ARGS)

# The whole suite twice: with the C index, then with the pure-Python twin.
# pytest exit 5 (no tests collected) is a failure here, as any non-zero exit.
test: build
	$(PY) -c "import ambry.native as n; assert n.implementation == n.record_implementation == 'c', (n.implementation, n.record_implementation)"
	$(PY) -m pytest -q -m "not slow and not docker" tests
	AMBRY_NO_EXTENSIONS=1 $(PY) -m pytest -q -m "not slow and not docker" tests/unit

faults: build
	$(PY) -m pytest -q -m slow tests

# The docker-compose cluster for real: builds the image (deploy/build-image.sh), runs
# docker-compose.yml, kills and restarts a storage node, then `down -v`. Needs dockerd running.
docker-test: build
	AMBRY_DOCKER_REQUIRED=1 $(PY) -m pytest -q -m docker tests/docker

bench: build
	$(PY) benchmarks/run_all.py

bench-smoke: build
	$(PY) benchmarks/run_all.py --smoke

lint: build
	$(VENV)/bin/ruff check ambry tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf build ambry/native/*.so .pytest_cache .hypothesis

distclean: clean
	rm -rf $(VENV) data
