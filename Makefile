# The two commands a new user needs: `make serve` and `make test` (both set up first).
.PHONY: setup serve test test-fast bench

setup:
	bash scripts/setup.sh

serve: setup
	.venv/bin/python -m gateway serve

test: setup
	.venv/bin/python -m pytest

test-fast: setup
	.venv/bin/python -m pytest -m "not slow"
