#!/usr/bin/env bash
# mypy cannot follow setuptools' package-dir mapping of an editable install, so we type-check
# a symlink tree laid out as the installed package is: driftline/{stream,learners,...}.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .typecheck && mkdir -p .typecheck/driftline
for f in driftline/*; do ln -s "../../$f" ".typecheck/driftline/$(basename "$f")"; done
for sub in stream learners adapters monitoring; do ln -s "../../$sub" ".typecheck/driftline/$sub"; done
cd .typecheck && ../.venv/bin/python -m mypy --config-file ../pyproject.toml -p driftline
