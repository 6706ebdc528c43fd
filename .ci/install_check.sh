#!/usr/bin/env bash
# The installs users make, from this clone, run outside the checkout in fresh virtual environments:
#   1. the wheel, built from the sdist (so both hold what they must), on Python 3.11 with [full]: `edgeseg demo`;
#   2. the same wheel on Python 3.10 (JetPack 6's Python) with [runtime], no torch: `edgeseg verify` and
#      `edgeseg infer` on the bundle the demo wrote.
# Prints the seconds of every step. PYTHON (default python3) must be the Python 3.11 that takes torch==2.13.0.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/edgeseg-install-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
case "$work/" in "$repo"/*) echo "install check: $work is inside the checkout; set TMPDIR elsewhere" >&2; exit 1 ;; esac

find_python310() {
    local root=${PYENV_ROOT:-$HOME/.pyenv} candidate
    for candidate in "$root/versions/3.10.13/bin/python3" "$root"/versions/3.10.*/bin/python3; do
        [ -x "$candidate" ] && { echo "$candidate"; return; }
    done
    if command -v pyenv >/dev/null && candidate="$(pyenv prefix 3.10 2>/dev/null)/bin/python3" && [ -x "$candidate" ]; then
        echo "$candidate"; return
    fi
    command -v python3.10 && return
    echo "install check: no Python 3.10 (looked in $root/versions/3.10.*, \`pyenv prefix 3.10\`, python3.10 on PATH);" \
         "install one: pyenv install 3.10" >&2
    return 1
}
python310=$(find_python310)  # before the long steps

started=$SECONDS
step() {  # step NAME COMMAND...: run it, print its time
    local name=$1 t0=$SECONDS; shift
    echo "+ [$name] $*"
    "$@"
    echo "[$name] $((SECONDS - t0)) s"
}

py311=$work/venv311 py310=$work/venv310 outside=$work/outside
mkdir "$outside"
step venv311 "${PYTHON:-python3}" -m venv "$py311"
step build bash -c "'$py311/bin/pip' install -q build && '$py311/bin/python' -m build -q --outdir '$work/dist' '$repo'"
wheel=$(ls "$work"/dist/edgeseg-*.whl)
# torch stays pinned: an unpinned torch request downloads a multi-GB CUDA build
step install-full "$py311/bin/pip" install -q torch==2.13.0 "${wheel}[full]"
step demo bash -c "cd '$outside' && '$py311/bin/edgeseg' demo"

step venv310 "$python310" -m venv "$py310"
step install-runtime "$py310/bin/pip" install -q "${wheel}[runtime]"
if "$py310/bin/python" -c "import torch" 2>/dev/null; then echo "install check: [runtime] pulled torch" >&2; exit 1; fi
step verify310 bash -c "cd '$outside' && '$py310/bin/edgeseg' verify edgeseg-demo/bundle"
step infer310 bash -c "cd '$outside' && '$py310/bin/edgeseg' infer edgeseg-demo/bundle edgeseg-demo/phantom/imagesTr -o masks310"
masks=$(find "$outside/masks310" -name '*.png' | wc -l)
images=$(find "$outside/edgeseg-demo/phantom/imagesTr" -type f | wc -l)
[ "$masks" -eq "$images" ] || { echo "install check: infer wrote $masks masks for $images images" >&2; exit 1; }
echo "install check: OK in $((SECONDS - started)) s ($("$py310/bin/python" --version) infer: $masks masks)"
