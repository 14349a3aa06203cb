#!/usr/bin/env bash
# Builds the built-in policy plugins into components in plugins/dist/ (committed files).
#
#   plugins/build.sh            build and (re)write plugins/dist/*.wasm and dist/toolchain.txt
#   plugins/build.sh --check    build into a temp dir and fail if plugins/dist differs
#   plugins/build.sh --clean    ... from a fresh temp target dir (a clean build; combinable)
#   plugins/build.sh --install  apt-get the Debian wasm toolchain first if it is missing
#
# Guest toolchain: a rustup toolchain with the wasm32-unknown-unknown target if one is
# installed, else Debian's rustc-web/cargo-web/rust-web-src + lld-22 (std built from source
# with RUSTC_BOOTSTRAP=1 -Zbuild-std). Force one with SALLYPORT_GUEST_TOOLCHAIN=rustup|debian.
# The committed files are reproducible only with the toolchain named in dist/toolchain.txt.
set -euo pipefail

check=0 clean=0 install=0
for arg in "$@"; do
  case "$arg" in
    --check) check=1 ;;
    --clean) clean=1 ;;
    --install) install=1 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
plugins="$repo/plugins"
dist="$plugins/dist"
# name:world of every built-in plugin (crate directory under plugins/).
builtins=(default-authorize:authorize-policy default-sudo:sudo-policy default-source:source-policy default-policy:authorize-policy)
# name:world of the example plugins under examples/ (built and checked, never committed).
examples=(business-hours:authorize-policy max-ttl:authorize-policy deny-users:authorize-policy)

say() { printf '%s\n' "build.sh: $*" >&2; }

# --- the native componentize tool (the machine's rustup toolchain) -------------------------
say "building plugins/tools/componentize"
CARGO_TARGET_DIR="$repo/target/wasm-guests-tools" \
  cargo build --quiet --locked --manifest-path "$plugins/tools/componentize/Cargo.toml"
componentize="$repo/target/wasm-guests-tools/debug/componentize"

# --- pick the guest toolchain ----------------------------------------------------------------
debian_ready() { [ -x /usr/bin/cargo ] && [ -d /usr/lib/rustlib/src/rust/library ] && command -v wasm-ld-22 >/dev/null; }
choice=${SALLYPORT_GUEST_TOOLCHAIN:-auto}
if [ "$choice" = auto ]; then
  if command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    choice=rustup
  else
    choice=debian
  fi
fi
if [ "$choice" = debian ] && ! debian_ready; then
  if [ "$install" = 1 ]; then
    say "installing Debian's wasm toolchain (rustc-web cargo-web rust-web-src lld-22)"
    apt-get update -qq && apt-get install -y -qq rustc-web cargo-web rust-web-src lld-22 >/dev/null
  else
    say "no wasm toolchain: install one with"
    say "  apt-get update && apt-get install -y rustc-web cargo-web rust-web-src lld-22"
    say "(or run plugins/build.sh --install)"
    exit 2
  fi
fi

# Paths are remapped so the output does not depend on where the repo or CARGO_HOME is.
cargo_home=${CARGO_HOME:-$HOME/.cargo}
rustflags="-C link-arg=-zstack-size=65536 --remap-path-prefix=$repo=/sallyport --remap-path-prefix=$cargo_home=/cargo"
target_dir="$repo/target/wasm-guests"
if [ "$clean" = 1 ]; then
  target_dir=$(mktemp -d /tmp/sallyport-guests.XXXXXX)
fi
build=(cargo build --release --locked --target wasm32-unknown-unknown)
for b in "${builtins[@]}" "${examples[@]}"; do build+=(-p "${b%%:*}"); done

case "$choice" in
  rustup)
    rustc_version=$(rustc -V)
    run_build() { RUSTFLAGS="$rustflags" CARGO_TARGET_DIR="$target_dir" "${build[@]}"; }
    ;;
  debian)
    rustc_version=$(/usr/bin/rustc -V)
    # Panics print nowhere on wasm32-unknown-unknown, so immediate-abort loses nothing and
    # drops the panic machinery; optimize_for_size picks std's smaller code paths.
    rustflags="$rustflags -Zunstable-options -Cpanic=immediate-abort"
    build+=(-Zbuild-std=std,panic_abort -Zbuild-std-features=optimize_for_size)
    run_build() {
      PATH="/usr/bin:$PATH" RUSTC_BOOTSTRAP=1 RUSTFLAGS="$rustflags" CARGO_TARGET_DIR="$target_dir" \
        CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld-22 "${build[@]}"
    }
    ;;
  *) say "SALLYPORT_GUEST_TOOLCHAIN must be rustup or debian, not $choice"; exit 2 ;;
esac

say "building guests with $choice toolchain: $rustc_version (target dir $target_dir)"
start=$SECONDS
(cd "$plugins" && run_build)
say "guest build took $((SECONDS - start)) s"

# --- encode, verify, compare -----------------------------------------------------------------
out="$dist"
if [ "$check" = 1 ]; then out=$(mktemp -d /tmp/sallyport-dist.XXXXXX); fi
mkdir -p "$out"
for b in "${builtins[@]}"; do
  name=${b%%:*} world=${b#*:}
  core="$target_dir/wasm32-unknown-unknown/release/${name//-/_}.wasm"
  "$componentize" encode "$core" "$out/$name.wasm"
  "$componentize" check "$out/$name.wasm" "$repo/wit" "$world"
done
mkdir -p "$target_dir/components"
for b in "${examples[@]}"; do
  name=${b%%:*} world=${b#*:}
  "$componentize" encode "$target_dir/wasm32-unknown-unknown/release/${name//-/_}.wasm" "$target_dir/components/$name.wasm"
  "$componentize" check "$target_dir/components/$name.wasm" "$repo/wit" "$world"
done
{
  echo "# Toolchain that built these components; plugins/build.sh --check reproduces them only with it."
  echo "guest-toolchain: $choice"
  echo "rustc: $rustc_version"
  echo "componentize: wit-component $(awk '/^name = "wit-component"$/ { getline; gsub(/version = |"/, ""); print }' "$plugins/tools/componentize/Cargo.lock")"
} >"$out/toolchain.txt"

if [ "$check" = 1 ]; then
  if ! cmp -s "$out/toolchain.txt" "$dist/toolchain.txt"; then
    say "plugins/dist was built with another toolchain; its components cannot be reproduced here:"
    diff "$dist/toolchain.txt" "$out/toolchain.txt" >&2 || true
    exit 1
  fi
  stale=0
  for b in "${builtins[@]}"; do
    name=${b%%:*}
    if ! cmp -s "$out/$name.wasm" "$dist/$name.wasm"; then
      say "plugins/dist/$name.wasm differs from a fresh build of plugins/$name: run plugins/build.sh and commit"
      stale=1
    fi
  done
  rm -rf "$out"
  if [ "$clean" = 1 ]; then rm -rf "$target_dir"; fi
  [ "$stale" = 0 ] || exit 1
  say "plugins/dist is up to date"
else
  if [ "$clean" = 1 ]; then rm -rf "$target_dir"; fi
  say "wrote $(ls "$dist" | tr '\n' ' ')"
fi
