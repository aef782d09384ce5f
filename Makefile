# The two set-up commands of the README: `make run` and `make test`. Each does all
# its own set-up on a fresh machine: the virtualenv, RabbitMQ, and nx-27017.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements/*.txt | sha1sum | cut -c1-12)

.PHONY: run test test-unit bench lint rabbitmq venv clean

venv: $(STAMP)

$(STAMP): requirements/base.txt requirements/dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

rabbitmq:
	scripts/ensure-rabbitmq.sh

run: venv rabbitmq
	$(PY) -m devstack.run

test: venv rabbitmq
	$(PY) -m pytest

test-unit: venv
	$(PY) -m pytest tests/unit

bench: venv rabbitmq
	$(PY) -m bench

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf var .pytest_cache
