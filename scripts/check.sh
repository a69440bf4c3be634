#!/usr/bin/env bash
# Lint, format and type checks, as CI runs them before the tests (tools from `pip install -e ".[test]"`).
#   scripts/check.sh          check only (non-zero exit on any finding)
#   scripts/check.sh --fix    apply ruff's safe fixes and format in place first, then check
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--fix" ]]; then
  ruff check --fix .
  ruff format .
fi
ruff check .
ruff format --check .
mypy  # files and settings: [tool.mypy] in pyproject.toml (the leffa package)
