# msd: `make run` starts the daemon (with the paper exchange) on local PostgreSQL and RabbitMQ;
# `make test` runs the whole test suite against the same real services.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp

.PHONY: install services run test test-unit check-config migrate bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(STAMP)

services:
	bin/ensure-services

run: install services
	bin/msd-demo

test: install services
	$(PY) -m pytest -q -p no:cacheprovider

test-unit: install
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

check-config: install
	$(VENV)/bin/msd check-config etc/model-service.yaml

migrate: install services
	$(VENV)/bin/msd migrate -c etc/model-service.yaml

bench: install services
	$(PY) benchmarks/ingest.py

clean:
	rm -rf $(VENV) build *.egg-info var/run
