#!/usr/bin/env bash
# Fetch the snowflake-ml-python 1.27.0 wheel (not installed: tests read its real run_batch
# signature with `ast` and execute its pure-pydantic spec module) into .cache/sf127.
set -euo pipefail
dest="${MEDBATCH_SF127_DIR:-.cache/sf127}"
mkdir -p "$dest"
if ! ls "$dest"/snowflake_ml_python-1.27.0-*.whl >/dev/null 2>&1; then
  "${PYTHON:-python}" -m pip download --no-deps --only-binary=:all: -d "$dest" "snowflake-ml-python==1.27.0" -q
fi
ls "$dest"/snowflake_ml_python-1.27.0-*.whl
