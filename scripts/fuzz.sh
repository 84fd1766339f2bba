#!/usr/bin/env bash
# Runs every cargo-fuzz target of protocol/fuzz for FUZZ_SECONDS seconds each (make fuzz).
#
#   FUZZ_SECONDS=600 make fuzz             ten minutes per target
#   FUZZ_TARGETS="pg_frame pg_startup" make fuzz
#
# Installs cargo-fuzz if it is missing. libFuzzer needs nightly rustc flags (-Zsanitizer): a
# nightly toolchain is used when rustup has one, otherwise stable with RUSTC_BOOTSTRAP=1.
# The committed seeds live in protocol/fuzz/corpus/<target>/ and are only read; what libFuzzer
# finds goes to protocol/fuzz/target/corpus/<target>/ and crashes to protocol/fuzz/artifacts/.
# Exits non-zero if any target crashed, after running all of them.
set -euo pipefail

seconds="${FUZZ_SECONDS:-30}"
cd "$(dirname "$0")/../protocol/fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

fuzz=(cargo fuzz)
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
fi

read -r -a targets <<<"${FUZZ_TARGETS:-$("${fuzz[@]}" list | tr '\n' ' ')}"
"${fuzz[@]}" build

failed=()
for target in "${targets[@]}"; do
  echo "== fuzzing $target for ${seconds}s"
  mkdir -p "target/corpus/$target" "corpus/$target"
  if ! "${fuzz[@]}" run "$target" "target/corpus/$target" "corpus/$target" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1; then
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashes in ${failed[*]}; inputs are in protocol/fuzz/artifacts/" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${seconds}s each without a crash"
