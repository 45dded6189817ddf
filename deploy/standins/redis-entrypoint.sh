#!/bin/sh
# Stand-in for the official redis image's entrypoint (built from Debian's redis-server by
# scripts/build_images.sh standins): like it, a redis-server started without a config file turns
# protected mode off, because the container network, not Redis, is the boundary.
if [ "${1:-}" = redis-server ]; then
  shift
  exec redis-server --protected-mode no "$@"
fi
exec "$@"
