#!/bin/sh
# /entrypoint.sh of the local SeaweedFS image (infra/stack/seaweedfs/Dockerfile), with the
# upstream image's defaults for the subcommands the stack uses:
#   server ARGS   ->  weed -logtostderr=true server -dir=/data -volume.max=0
#                       -master.volumeSizeLimitMB=1024 ARGS
#   anything else ->  run as given (e.g. `weed version`, `sh`)
# Logs go to stderr (docker logs), not to files under /tmp.
set -eu

case "${1:-}" in
  server)
    shift
    exec /usr/bin/weed -logtostderr=true server -dir=/data -volume.max=0 \
      -master.volumeSizeLimitMB=1024 "$@" ;;
  master|volume|filer|s3)
    exec /usr/bin/weed -logtostderr=true "$@" ;;
  *)
    exec "$@" ;;
esac
