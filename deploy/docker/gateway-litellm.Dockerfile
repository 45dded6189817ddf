# tierwise gateway with litellm: the gateway image (gateway.Dockerfile) plus the litellm SDK and
# what only it needs (requirements/lock-gateway-litellm.txt: litellm, openai, botocore,
# tokenizers, ...), as one layer on top, for litellm: tiers (hosted providers: OpenAI,
# Anthropic, Bedrock, ...). A gateway whose tiers are all url: tiers runs the smaller image.
#
# Air-gapped, like the gateway image: scripts/build_images.sh litellm (after `gateway`), from the
# repository root, with the same wheelhouse deploy/build/wheelhouse:
#   podman build --pull=never --format docker \
#     --ignorefile deploy/docker/gateway-litellm.Dockerfile.dockerignore \
#     -f deploy/docker/gateway-litellm.Dockerfile -t tierwise/gateway-litellm:0.1.0 .
FROM localhost/tierwise/debian-python-build:bookworm AS build

ENV PIP_NO_INDEX=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY requirements/lock-gateway-litellm.txt /tmp/lock-gateway-litellm.txt
COPY deploy/build/wheelhouse/ /wheelhouse/
# Installed into a folder of its own (--target), then copied over the gateway image's
# site-packages: only these packages end up in the new layer. Removed: litellm's proxy admin
# UI (the gateway uses litellm's SDK, never its proxy server), the console scripts, and the
# extension modules' symbol tables (as in the gateway image; *.libs/ left alone).
RUN python3 -m venv /tmp/pip \
 && /tmp/pip/bin/pip install --no-index --find-links /wheelhouse --no-deps --no-compile \
      --target /opt/litellm-site -r /tmp/lock-gateway-litellm.txt \
 && rm -rf /opt/litellm-site/bin /opt/litellm-site/litellm/proxy/_experimental/out \
 && find /opt/litellm-site -path '*.libs' -prune -o -type f -name '*.so' -print0 | xargs -0 strip --strip-unneeded

FROM localhost/tierwise/gateway:0.1.0

USER 0
COPY --from=build /opt/litellm-site/ /opt/venv/lib/python3.11/site-packages/
# Bytecode for what a litellm: tier imports (the image's root file system is read-only at run
# time), and a check that the gateway finds it.
RUN env -u PYTHONDONTWRITEBYTECODE /opt/venv/bin/python -c "\
import gateway.tiers.litellm_provider as lp, gateway.ledger.pricing as pricing; lp.require_litellm('check'); \
lp._litellm(); assert pricing.cost_from_map('gpt-4o-mini', 1000, 1000)"
USER 10001
