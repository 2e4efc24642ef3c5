#!/usr/bin/env bash
# Installs cargo-fuzz into a cache directory the CI keeps between runs
# (target/tools by default; override with CARGO_FUZZ_ROOT). Does nothing
# when it is already there. libFuzzer itself is built by the fuzz crate's
# libfuzzer-sys dependency, which needs a C++ compiler (g++ or clang++).
set -euo pipefail
cd "$(dirname "$0")/.."
root="${CARGO_FUZZ_ROOT:-$PWD/target/tools}"
if [ -x "$root/bin/cargo-fuzz" ]; then
  echo "$root/bin"
  exit 0
fi
command -v c++ >/dev/null || command -v g++ >/dev/null || {
  echo "cargo-fuzz needs a C++ compiler (install g++)" >&2
  exit 1
}
CARGO_INSTALL_ROOT="$root" cargo install cargo-fuzz --locked --quiet >&2
echo "$root/bin"
