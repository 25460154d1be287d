#!/usr/bin/env bash
# Fetch the snowflake-ml-python wheels whose real run_batch signature and spec classes the
# tests check (not installed: the signature is read with `ast`, the pure-pydantic spec
# modules are executed from the wheel) into .cache/sf. pip caches the downloads.
#   1.27.0  the first release medbatch supports (specs exported from snowflake.ml.model)
#   1.47.0  a middle 1.x (specs only in snowflake.ml.model.batch)
#   1.54.0  the last 1.x (ships the 2.x batch_inference module; run_batch still 1.x)
#   2.0.0   the first 2.x (the installed 2.x is tested too)
set -euo pipefail
dest="${MEDBATCH_SF_WHEELS_DIR:-.cache/sf}"
mkdir -p "$dest"
for version in 1.27.0 1.47.0 1.54.0 2.0.0; do
  if ! ls "$dest"/snowflake_ml_python-"$version"-*.whl >/dev/null 2>&1; then
    "${PYTHON:-python}" -m pip download --no-deps --only-binary=:all: -d "$dest" \
      "snowflake-ml-python==$version" -q
  fi
  ls "$dest"/snowflake_ml_python-"$version"-*.whl
done
