#!/usr/bin/env bash
# Runs every fuzz target for a while (default 20 s each) from the committed seed corpora, and
# fails on the first crash. CI runs it with the default; long local runs pass a duration:
#   fuzz/smoke.sh 600
# The toolchain is stable: RUSTC_BOOTSTRAP=1 lets it take the nightly-only flags cargo-fuzz
# passes (sanitizer, coverage instrumentation).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
secs="${1:-20}"
targets=(conf cgroup procfs config decide)
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
cargo fuzz build -O

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for t in "${targets[@]}"; do
  # A scratch corpus: the run's discoveries stay out of the committed seeds.
  mkdir -p "$work/$t"
  cp corpus/"$t"/seed-* "$work/$t/"
  printf '== fuzz %s for %s s\n' "$t" "$secs"
  cargo fuzz run -O "$t" "$work/$t" -- -max_total_time="$secs" -print_final_stats=1 \
    >"$work/$t.log" 2>&1 || {
    tail -n 60 "$work/$t.log"
    echo "fuzz target $t failed: the crashing input is under fuzz/artifacts/$t/" >&2
    exit 1
  }
  grep -E '^stat::number_of_executed_units' "$work/$t.log" || true
  grep -E 'cov: ' "$work/$t.log" | tail -n 1 | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' || true
done
echo "fuzz smoke: ${#targets[@]} targets, no crash"
