# The two commands a newcomer needs: `make demo` and `make test`. Both set themselves up.
SHELL := /bin/bash
PY := .venv/bin/python
# XGBoost's OpenMP threads wait for work asleep, not spinning: spinning threads took the cores
# other processes needed (one fit: 76 s spinning, 5.8 s passive, at a load of 10 on 2 cores).
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup demo demo-secure test lint stop status

setup:
	@infra/setup.sh

demo: setup
	$(PY) -m infra.stack demo $(DEMO_ARGS)

# Kafka over SASL_SSL with SCRAM users and ACLs, certificates from the stack's own CA.
demo-secure: setup
	TRAFFIC_SECURITY=tls $(PY) -m infra.stack demo $(DEMO_ARGS)

test: setup lint
	$(PY) -m pytest

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports --no-cache
	.venv/bin/mypy

stop:
	$(PY) -m infra.stack stop all

status:
	$(PY) -m infra.stack status
