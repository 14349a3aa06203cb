#!/usr/bin/env bash
# Optional runtime smoke test of the built components, independent of the sallyport host:
# transpiles plugins/dist/*.wasm with jco (npm @bytecodealliance/jco, a second component-model
# implementation) and runs decisions on them under node, with host.js as the `host` interface.
# Needs node and npm; installs jco into target/wasm-guests-tools/smoke. Not part of build.sh.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
work="$repo/target/wasm-guests-tools/smoke"
mkdir -p "$work"
cp "$here/host.js" "$here/smoke.mjs" "$work/"
echo '{"type":"module","private":true}' >"$work/package.json"
echo 'export {};' >"$work/types.js"
cd "$work"
[ -x node_modules/.bin/jco ] || npm install --silent --no-audit --no-fund @bytecodealliance/jco@1.35.0
for p in default-authorize default-sudo default-source; do
  node_modules/.bin/jco transpile "$repo/plugins/dist/$p.wasm" -o "out/$p" --name "$p" --quiet \
    --map 'sallyport:policy/host@0.1.0=../../host.js' --map 'sallyport:policy/types@0.1.0=../../types.js'
done
node smoke.mjs
