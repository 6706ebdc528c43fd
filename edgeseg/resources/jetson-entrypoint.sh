#!/bin/sh
# edgeseg on a Jetson: on first start build the TensorRT engine of the bundle for this device (cached in
# $EDGESEG_ENGINE_CACHE, keyed by artifact + device + TensorRT version), then serve `edgeseg infer`.
#   docker run --runtime nvidia -v /data/bundle:/bundle:ro -v edgeseg-engines:/cache -v /data/in:/in:ro \
#     -v /data/out:/out edgeseg-jetson /in -o /out
# Any `edgeseg …` command instead: docker run … edgeseg-jetson edgeseg verify /bundle
set -eu
if [ "${1:-}" = "edgeseg" ]; then
  shift
  exec edgeseg "$@"
fi
bundle="${EDGESEG_BUNDLE:-/bundle}"
cache="${EDGESEG_ENGINE_CACHE:-/cache}"
backend="${EDGESEG_BACKEND:-tensorrt}"
if [ "$backend" = "tensorrt" ]; then
  edgeseg prepare-engine "$bundle" --cache "$cache"
fi
exec edgeseg infer "$bundle" "$@" --backend "$backend" --engine-cache "$cache"
