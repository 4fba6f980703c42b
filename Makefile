# The two commands of the README: `make demo` (the main job on built-in data) and `make test`.
.PHONY: setup demo test lint

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/jfb demo

test: setup
	.venv/bin/python -m pytest
	.venv/bin/ruff check src tests

lint: setup
	.venv/bin/ruff check src tests
