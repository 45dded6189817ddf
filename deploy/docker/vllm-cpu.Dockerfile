# tierwise vLLM tier, CPU: vllm-cpu 0.32.0 on torch 2.13.0+cpu, exactly as locked for the
# project's tests (requirements/lock-cpu.txt), serving one model dir from /models.
#
#   docker build -f deploy/docker/vllm-cpu.Dockerfile -t tierwise/vllm-cpu:0.1.0 .
#   docker run -v tierwise_models:/models -p 8001:8000 tierwise/vllm-cpu:0.1.0 \
#       --model /models/student --served-model-name student
#
# float32 on purpose: on CPUs without AVX-512 bf16 (like the project's CI machines) bfloat16
# is emulated and ~3x slower at 8 streams (../shared/NOTES.md).
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu

# Identical to gateway.Dockerfile up to the pip install: both images share these layers.
# Not version-pinned (hadolint DL3008): the pinned base tag fixes the Debian release, and
# bookworm point releases drop superseded package versions, which would break the build.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 libnuma1 \
 && rm -rf /var/lib/apt/lists/*

COPY requirements/lock-cpu.txt /tmp/lock-cpu.txt
RUN pip install --no-deps -r /tmp/lock-cpu.txt \
 && (pip uninstall -y torchvision torchaudio torchcodec || true)

RUN useradd --system --uid 10001 --gid 0 --home-dir /tmp vllm
USER 10001
# VLLM_CPU_KVCACHE_SPACE: GiB of KV cache per server. float32 KV is 45 KiB/token for the
# 30-layer teacher (2 x 3 KV heads x 64 x 4 B x 30 layers), 9 KiB/token for the 6-layer
# student: 1 GiB holds ~22 (teacher) / ~113 (student) full 1024-token sequences.
ENV HOME=/tmp \
    HF_HOME=/tmp/hf \
    HF_HUB_OFFLINE=1 \
    VLLM_CPU_KVCACHE_SPACE=1 \
    VLLM_NO_USAGE_STATS=1

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["python", "-m", "vllm.entrypoints.openai.api_server", "--host", "0.0.0.0", "--port", "8000", \
            "--dtype", "float32", "--max-model-len", "1024", "--enforce-eager"]
# Which model: override with `--model DIR --served-model-name NAME` (the tier name the gateway asks for).
CMD ["--model", "/models/teacher", "--served-model-name", "teacher"]
