#!/usr/bin/env bash
# Install the local model runtimes into a venv, then fetch the weights.
#
# llama-cpp-python has no binary wheel for this platform and takes several minutes to build, so
# the built wheel is cached (default ~/.cache/nx-wheels) and reused on every later install.
# LLAVA_BUILD=OFF: the multimodal part is unused here and its build did not finish in 15 minutes;
# GGML_NATIVE=OFF: the cached wheel must run on any x86-64 machine that shares the cache, not only
# on the CPU that built it.
#
# Usage: scripts/local_models_install.sh [--no-fetch]
# Env:   VENV (default .venv), NX_WHEEL_CACHE (default ~/.cache/nx-wheels),
#        MODELS_DIR (default data/models)
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
CACHE="${NX_WHEEL_CACHE:-$HOME/.cache/nx-wheels}"
MODELS_DIR="${MODELS_DIR:-data/models}"

LLAMA_VERSION="0.3.36"
RUNTIME_PINS=(
  "onnxruntime==1.32.0"
  "tokenizers==0.23.3"
  "numpy==2.4.6"
)

[ -x "$PY" ] || { echo "no venv at $VENV (set VENV=...)" >&2; exit 1; }
mkdir -p "$CACHE"

"$PY" -m pip install --disable-pip-version-check -q "${RUNTIME_PINS[@]}"

wheel="$(ls "$CACHE"/llama_cpp_python-"$LLAMA_VERSION"-*.whl 2>/dev/null | head -n1 || true)"
if [ -z "$wheel" ]; then
  echo "building llama-cpp-python $LLAMA_VERSION from source (about 4-7 minutes, once per machine)..."
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" \
    "$PY" -m pip wheel --disable-pip-version-check --no-deps \
    "llama-cpp-python==$LLAMA_VERSION" -w "$CACHE"
  wheel="$(ls "$CACHE"/llama_cpp_python-"$LLAMA_VERSION"-*.whl | head -n1)"
fi
echo "installing $wheel"
# Its dependencies (numpy, typing-extensions, diskcache, jinja2) come from the index as wheels.
"$PY" -m pip install --disable-pip-version-check -q "$wheel"

if [ "${1:-}" != "--no-fetch" ]; then
  "$PY" -m local_models.fetch --dest "$MODELS_DIR"
fi
