#!/usr/bin/env bash
# Fetch the vLLM wheel the fake engine follows (never installed: it pulls CUDA torch) and
# unpack its Python files into .cache/vllm/<version>; put the small packages its
# pure-Python modules import (and that the environment lacks) into .cache/vllm/deps.
# tests/unit/runners/test_vllm_wheel.py runs medbatch's vLLM code against them.
set -euo pipefail
PY=${PYTHON:-python}
version="${MEDBATCH_VLLM_VERSION:-0.34.0}"
dest="${MEDBATCH_VLLM_DIR:-.cache/vllm}"
mkdir -p "$dest"
if [ ! -f "$dest/$version/vllm/__init__.py" ]; then
  if ! ls "$dest"/vllm-"$version"-*.whl >/dev/null 2>&1; then
    "$PY" -m pip download --no-deps --only-binary=:all: -d "$dest" "vllm==$version" -q
  fi
  rm -rf "$dest/$version.tmp"
  mkdir -p "$dest/$version.tmp"
  "$PY" - "$dest"/vllm-"$version"-*.whl "$dest/$version.tmp" <<'PYEOF'
import sys, zipfile
wheel, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as archive:
    names = [n for n in archive.namelist() if n.startswith("vllm/") and n.endswith(".py")]
    archive.extractall(target, names)
PYEOF
  mv "$dest/$version.tmp" "$dest/$version"
fi
# module to import -> distribution to fetch; only those the environment cannot import.
missing=()
for pair in msgspec:msgspec zmq:pyzmq cbor2:cbor2 cachetools:cachetools blake3:blake3 \
  pybase64:pybase64 uvloop:uvloop cpuinfo:py-cpuinfo prometheus_client:prometheus_client \
  openai_harmony:openai-harmony psutil:psutil openai:openai fastapi:fastapi; do
  module=${pair%%:*}
  if ! PYTHONPATH="$dest/deps" "$PY" -c "import $module" >/dev/null 2>&1; then
    missing+=("${pair#*:}")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  "$PY" -m pip install -q --no-deps --only-binary=:all: --target "$dest/deps" "${missing[@]}"
fi
mkdir -p "$dest/deps"
echo "$dest/$version"
