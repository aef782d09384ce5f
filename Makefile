# The two set-up commands of the README: `make run` and `make test`. Each does all
# its own set-up on a fresh machine: the virtualenv, RabbitMQ, and nx-27017.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements/*.txt | sha1sum | cut -c1-12)

.PHONY: run test test-unit faults fuzz bench lint rabbitmq chromium faketime venv clean

venv: $(STAMP)

$(STAMP): requirements/base.txt requirements/dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

rabbitmq:
	scripts/ensure-rabbitmq.sh

chromium:
	scripts/ensure-chromium.sh

faketime:
	scripts/ensure-faketime.sh

run: venv rabbitmq
	$(PY) -m devstack.run

test: venv rabbitmq chromium faketime
	$(PY) -m pytest --ignore=tests/faults --ignore=tests/fuzz

test-unit: venv
	$(PY) -m pytest tests/unit

# Fault tests (tests/faults): real processes, 20,000 notifications per scenario, exact counts printed.
faults: venv rabbitmq
	$(PY) -m pytest tests/faults -s

# schemathesis against /openapi.json of a real stack: no 5xx, every answer as documented; prints the cases run.
fuzz: venv rabbitmq
	$(PY) -m pytest tests/fuzz -s

bench: venv rabbitmq
	$(PY) -m bench

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf var .pytest_cache
