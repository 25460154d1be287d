#!/usr/bin/env bash
# Installing medbatch into a Snowflake notebook must keep the notebook's preinstalled
# snowflake-ml-python and snowflake-snowpark-python when they are inside medbatch's
# supported range. For each pair below (the floor of the range, two releases inside it,
# the newest), pip resolves medbatch[snowflake] for this interpreter with the pair pinned as
# constraints, installing nothing (--dry-run --report), and the report must keep both.
# Needs the package index (it is a CI step, not a test).
# Usage: PYTHON=.venv-py310/bin/python bash scripts/check_notebook_resolution.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
# snowflake-ml-python:snowflake-snowpark-python
PAIRS=${MEDBATCH_NOTEBOOK_PAIRS:-"1.27.0:1.40.0 1.47.0:1.47.0 1.54.0:1.54.0 2.6.0:1.56.0"}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
version=$($PY -c 'import sys; print("%d.%d" % sys.version_info[:2])')
for pair in $PAIRS; do
  ml=${pair%%:*}
  snowpark=${pair##*:}
  printf 'snowflake-ml-python==%s\nsnowflake-snowpark-python==%s\n' "$ml" "$snowpark" \
    >"$work/constraints.txt"
  # --ignore-installed: resolve as for an environment that holds only the pinned pair, not
  # whatever this venv happens to have.
  if ! $PY -m pip install --dry-run --ignore-installed --quiet --report "$work/report.json" \
    --constraint "$work/constraints.txt" ".[snowflake]" 2>"$work/pip.log"; then
    grep -v "is ignored: it is neither a file nor a directory" "$work/pip.log" >&2 || true
    echo "FAIL (Python $version): medbatch[snowflake] cannot be installed beside" \
      "snowflake-ml-python $ml and snowflake-snowpark-python $snowpark" >&2
    exit 1
  fi
  $PY - "$work/report.json" "$ml" "$snowpark" "$version" <<'PYEOF'
import json
import re
import sys

path, ml, snowpark, version = sys.argv[1:]
with open(path, encoding="utf-8") as handle:
    report = json.load(handle)
chosen = {
    re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower(): item["metadata"]["version"]
    for item in report["install"]
}
wanted = {"snowflake-ml-python": ml, "snowflake-snowpark-python": snowpark}
changed = {name: chosen.get(name) for name, pin in wanted.items() if chosen.get(name) != pin}
if changed:
    sys.exit(f"FAIL (Python {version}): the notebook's {wanted} would become {changed}")
print(
    f"ok (Python {version}): medbatch {chosen.get('medbatch')} installs beside "
    f"snowflake-ml-python {ml} and snowflake-snowpark-python {snowpark} "
    f"({len(chosen)} packages resolved)"
)
PYEOF
done
