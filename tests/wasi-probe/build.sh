#!/usr/bin/env bash
# Builds the WASI probe (a test component, see app.py) into
# target/wasm-guests/components/wasi-probe.wasm with the componentize-py of the Python example
# (examples/weekend-read-only/build.sh installs it into a venv under target/).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cpy="$repo/target/wasm-guests/python/venv/bin/componentize-py"
[ -x "$cpy" ] || "$repo/examples/weekend-read-only/build.sh"
out="$repo/target/wasm-guests/components"
mkdir -p "$out"
(cd "$here" && "$cpy" -d "$repo/wit" -w authorize-policy componentize app -o "$out/wasi-probe.wasm")
ls -l "$out/wasi-probe.wasm"
