#!/usr/bin/env bash
# Builds the Python example into target/wasm-guests/components/weekend-read-only.wasm with
# componentize-py (installed into a venv under target/), after running its native test.
# The component embeds CPython (about 18 MB) and imports WASI 0.2 besides sallyport's `host`.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
work="$repo/target/wasm-guests/python"
out="$repo/target/wasm-guests/components"
mkdir -p "$work" "$out"
[ -x "$work/venv/bin/componentize-py" ] || {
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install --quiet componentize-py==0.25.1
}
cpy="$work/venv/bin/componentize-py"
rm -rf "$work/bindings"
"$cpy" -d "$repo/wit" -w authorize-policy bindings "$work/bindings"
(cd "$here" && PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$work/bindings" python3 test_app.py)
(cd "$here" && "$cpy" -d "$repo/wit" -w authorize-policy componentize app -o "$out/weekend-read-only.wasm")
ls -l "$out/weekend-read-only.wasm"
