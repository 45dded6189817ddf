# tierwise gateway, alone: url: tiers (vLLM or any OpenAI-compatible server), the trained
# router, Postgres ledger, Redis limits. No torch, vLLM or transformers
# (requirements/lock-gateway.txt), and no litellm: gateway-litellm.Dockerfile adds it for
# litellm: tiers. Model assembly and vLLM tiers are in vllm-cpu.Dockerfile.
#
# Air-gapped: built by scripts/build_images.sh (`make images`) from the repository root with
#   podman build --pull=never --format docker \
#     --ignorefile deploy/docker/gateway.Dockerfile.dockerignore \
#     -f deploy/docker/gateway.Dockerfile -t tierwise/gateway:0.1.0 .
# The base is made locally with mmdebstrap from Debian packages, the Python packages come from
# the wheelhouse deploy/build/wheelhouse made on the host from the lock: nothing is downloaded.
#
# Run read-only, with writable state on a volume or tmpfs (podman mounts a tmpfs on /tmp):
#   podman run --read-only -v tierwise-state:/var/lib/tierwise -p 8000:8000 tierwise/gateway:0.1.0
FROM localhost/tierwise/debian-python-build:bookworm AS build

ENV PIP_NO_INDEX=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY requirements/lock-gateway.txt /tmp/lock-gateway.txt
COPY deploy/build/wheelhouse/ /wheelhouse/
# --no-compile: bytecode is written below only for the modules a serving gateway imports,
# which keeps the image ~100 MB smaller than compiling every module of every package.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --find-links /wheelhouse --no-deps --no-compile -r /tmp/lock-gateway.txt \
 && /opt/venv/bin/pip uninstall -y -q pip setuptools

# Files no gateway process reads: the packages' own test suites. And the symbol tables of the
# extension modules (uvloop alone drops from 13.6 to 1.6 MB): tracebacks and the dynamic
# symbols Python links against are kept. The vendored libraries in *.libs/ are left alone
# (auditwheel rewrote them with patchelf; strip after patchelf is a known way to break them).
RUN site=/opt/venv/lib/python3.11/site-packages \
 && find "$site/numpy" "$site/scipy" "$site/sklearn" -depth -type d -name tests -exec rm -rf {} + \
 && find "$site" -path '*.libs' -prune -o -type f -name '*.so' -print0 | xargs -0 strip --strip-unneeded

# Bytecode for the third-party modules serving imports, in a layer that code changes keep
# (the root file system is read-only at run time: without it every start compiles them again).
RUN /opt/venv/bin/python -c "\
import fastapi, uvicorn.loops.uvloop, uvicorn.protocols.http.httptools_impl, uvicorn.lifespan.on, \
sqlalchemy.dialects.postgresql.psycopg, sqlalchemy.dialects.sqlite, psycopg, redis.asyncio, aiohttp, \
httpx, prometheus_client, typer, rich.logging, yaml, numpy, skops.io"

# The project from source at /app ({project_root} in configs), on the venv's path.
WORKDIR /app
COPY gateway/ gateway/
COPY router/ router/
COPY tierwise_common/ tierwise_common/
COPY artifacts/router/ artifacts/router/
# The student's competence index: the routing chain's gate reads it (not the student's weights).
COPY artifacts/tiers/student/competence.skops artifacts/tiers/student/competence.skops
COPY deploy/config/gateway.compose.yaml /etc/tierwise/gateway.yaml
RUN echo /app > /opt/venv/lib/python3.11/site-packages/tierwise.pth \
 && /opt/venv/bin/python -c "import gateway.config as c; assert str(c.PROJECT_ROOT) == '/app', c.PROJECT_ROOT"

# Bytecode for the rest of what serving imports: the app, and the routing chain of the baked
# config built for real (its skops artifacts loaded), so a config that names a missing artifact
# fails the build, not the first start.
RUN TIERWISE_LEDGER_URL=sqlite:////tmp/build.db /opt/venv/bin/python -c "\
import gateway.cli, gateway.app, gateway.tiers.litellm_provider, uvicorn.loops.uvloop, \
uvicorn.protocols.http.httptools_impl, uvicorn.lifespan.on, psycopg, redis.asyncio, \
sqlalchemy.dialects.postgresql.psycopg, sqlalchemy.dialects.sqlite; \
from gateway.config import load_config; from gateway.routing.build import build_policy; \
build_policy(load_config('/etc/tierwise/gateway.yaml').router)" \
 && /opt/venv/bin/python -m compileall -q /app/gateway /app/router /app/tierwise_common

FROM localhost/tierwise/debian-python:bookworm

COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
COPY --from=build /etc/tierwise /etc/tierwise

# UID 10001, group 0 (OpenShift-style arbitrary UIDs work too); state on a volume.
RUN echo 'tierwise:x:10001:0:tierwise:/var/lib/tierwise:/usr/sbin/nologin' >> /etc/passwd \
 && mkdir -p /var/lib/tierwise /models \
 && chown 10001:0 /var/lib/tierwise /models \
 && chmod 0770 /var/lib/tierwise
USER 10001
WORKDIR /var/lib/tierwise
ENV PATH=/opt/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/tierwise \
    HF_HUB_OFFLINE=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
# tini as PID 1: passes SIGTERM to the gateway, which drains requests and the ledger queue.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "-m", "gateway", "serve", "--config", "/etc/tierwise/gateway.yaml", "--host", "0.0.0.0", "--port", "8000"]
