# The two commands a new user needs: `make serve` and `make test` (both set up first).
.PHONY: setup serve test test-fast bench images

setup:
	bash scripts/setup.sh

serve: setup
	.venv/bin/python -m gateway serve

test: setup
	.venv/bin/python -m pytest

test-fast: setup
	.venv/bin/python -m pytest -m "not slow"

# Container images with podman, air-gapped (deploy/README.md): tierwise/gateway, tierwise/vllm-cpu.
images: setup
	bash scripts/build_images.sh all
