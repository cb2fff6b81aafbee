#!/usr/bin/env bash
# Check the layer contracts and the absence of import cycles (import-linter; contracts in pyproject.toml).
# import-linter finds modules by walking the package's folder, and setuptools' package-dir mapping puts the
# subpackages in sibling folders: lint a copy laid out as the installed package is, driftline/{stream,...}.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=.importlint
rm -rf "$tree" && mkdir -p "$tree/driftline"
cp driftline/*.py driftline/py.typed "$tree/driftline/"
for sub in stream learners adapters monitoring; do
  (cd "$sub" && find . -name '*.py' -not -path '*/__pycache__/*' | while read -r f; do
    mkdir -p "../$tree/driftline/$sub/$(dirname "$f")" && cp "$f" "../$tree/driftline/$sub/$f"; done)
done
cd "$tree" && PYTHONPATH=. ../.venv/bin/lint-imports ../pyproject.toml --no-cache
