# The two commands a newcomer needs: `make demo` and `make test`. Both set themselves up.
SHELL := /bin/bash
PY := .venv/bin/python

.PHONY: setup demo test lint stop status

setup:
	@infra/setup.sh

demo: setup
	$(PY) -m infra.stack demo $(DEMO_ARGS)

test: setup lint
	$(PY) -m pytest

lint: setup
	.venv/bin/ruff check .

stop:
	$(PY) -m infra.stack stop all

status:
	$(PY) -m infra.stack status
