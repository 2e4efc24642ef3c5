#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60), starting from
# the seed corpus in fuzz/corpus/<target>/. Any crash, panic, failed
# assertion, leak or timeout fails the script; libFuzzer leaves the input
# in fuzz/artifacts/<target>/ — turn it into a regression test.
#
#   scripts/fuzz.sh 60                   # every target, 60 s each (CI)
#   scripts/fuzz.sh 300 request_head     # one target, 5 minutes
#
# Needs only the stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass
# its -Z sanitizer flags. cargo-fuzz is installed by install-cargo-fuzz.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(syslog_stream logplex_body request_head host_sni control_api dyno_response)
fi
bin="$(bash scripts/install-cargo-fuzz.sh)"
export PATH="$bin:$PATH"
export RUSTC_BOOTSTRAP=1
# Fuzz builds go under the workspace's target/ (kept between CI runs, like
# target/tools), apart from the normal builds; FUZZ_TARGET_DIR overrides.
tdir="${FUZZ_TARGET_DIR:-$PWD/target/fuzz}"
mkdir -p "$tdir"
tdir="$(cd "$tdir" && pwd)"
unset CARGO_TARGET_DIR
cd fuzz
# Release build with debug assertions (overflow checks) and AddressSanitizer.
flags=(--release --debug-assertions --sanitizer address --target-dir "$tdir")
cargo fuzz build "${flags[@]}"
summary=()
for t in "${targets[@]}"; do
  # New inputs go to a scratch corpus, so runs never rewrite the seeds.
  scratch="$tdir/corpus/$t"
  mkdir -p "$scratch" "corpus/$t"
  log="$tdir/fuzz-$t.log"
  echo "== fuzz $t for ${secs}s"
  if ! cargo fuzz run "${flags[@]}" "$t" "$scratch" "corpus/$t" -- \
    -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz target $t failed; the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
  cov="$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*' || echo '?')"
  summary+=("$t: $execs execs, cov $cov, no crash")
done
printf 'fuzz: %s\n' "${summary[@]}"
