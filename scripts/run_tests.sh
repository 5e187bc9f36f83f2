#!/usr/bin/env bash
# The project's test command: the linter, then the whole suite, integration tests (real
# vLLM, S3, MLflow servers, started once per session) included. "No tests collected" is a
# failure.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/.tools/bin:$PATH"
.venv/bin/ruff check ecotune components pipelines tests || { echo "ruff: lint errors" >&2; exit 1; }
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
