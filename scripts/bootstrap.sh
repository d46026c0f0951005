#!/usr/bin/env bash
# Create .venv (if needed) and install macl with its test extras, offline-friendly.
# uv is used where available (about 30 s here); plain pip is the fallback (about 3 min).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
STAMP="$VENV/.macl-installed"
hashed=(pyproject.toml scripts/bootstrap.sh)
[ -f scripts/install_wordnet.py ] && hashed+=(scripts/install_wordnet.py)
WANT=$(cat "${hashed[@]}" | sha256sum | cut -c1-16)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi

# uv does not read pip's config: hand it pip's configured indexes and find-links explicitly,
# so that the exact torch/torchvision wheels that lie on this machine's disk are used.
uv_args=()
while read -r url; do
  [ -n "$url" ] && uv_args+=(--extra-index-url "$url")
done < <("$VENV/bin/python" -m pip config get global.extra-index-url 2>/dev/null | tr ' ' '\n')
while read -r url; do
  [ -n "$url" ] && uv_args+=(--find-links "$url")
done < <("$VENV/bin/python" -m pip config get global.find-links 2>/dev/null | tr ' ' '\n')

UV=$(command -v uv || true)
if [ -z "$UV" ]; then
  "$VENV/bin/python" -m pip install -q uv >/dev/null 2>&1 && UV="$VENV/bin/uv" || UV=""
fi

echo "[setup] installing macl (editable) and test extras into $VENV"
if [ -n "$UV" ]; then
  UV_INDEX_STRATEGY=unsafe-best-match "$UV" pip install --python "$VENV/bin/python" \
    "${uv_args[@]}" -e '.[test]'
else
  "$VENV/bin/python" -m pip install -e '.[test]'
fi

# Byte-compile once: this environment may set PYTHONDONTWRITEBYTECODE=1, and then every fresh
# process would recompile torch, transformers and Prefect (10-15 s per CLI call or test subprocess).
echo "[setup] byte-compiling site-packages (once, ~1 min)"
"$VENV/bin/python" -m compileall -q -j 0 "$VENV/lib/python3.11/site-packages" >/dev/null 2>&1 || true

if [ -f scripts/install_wordnet.py ]; then
  "$VENV/bin/python" scripts/install_wordnet.py
fi

echo "$WANT" > "$STAMP"
echo "[setup] done"
