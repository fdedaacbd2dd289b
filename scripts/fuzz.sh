#!/usr/bin/env bash
# Fuzzing with cargo-fuzz and the pinned stable toolchain (rust-toolchain.toml):
# RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags (sanitizer, coverage) to
# stable rustc, so no nightly is needed.
#
#   scripts/fuzz.sh list                    the targets
#   scripts/fuzz.sh build                   build every target once
#   scripts/fuzz.sh run TARGET [SECS]       fuzz one target (default 600 s)
#   scripts/fuzz.sh run all [SECS]          every target in turn
#   scripts/fuzz.sh runs TARGET N           fuzz one target for N executions
#   scripts/fuzz.sh smoke [SECS]            every target for SECS (default 20)
#   scripts/fuzz.sh cmin TARGET             minimise fuzz/corpus/TARGET in place
#
# New inputs go to a scratch directory (FUZZ_SCRATCH, default under /tmp), so
# a run never rewrites the committed corpus under a concurrent `cargo test`;
# `cmin` folds them in. Crashes land in fuzz/artifacts/TARGET/.
# FUZZ_SANITIZER (default address) is passed as cargo fuzz --sanitizer.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

CARGO_FUZZ_VERSION=0.13.1
TARGETS=(verify deny_list selector_template cgroup workload_api issuer_node_api
  issuer_admin_api agent_config issuer_config authority_fix)
export RUSTC_BOOTSTRAP=1
SANITIZER="${FUZZ_SANITIZER:-address}"
SCRATCH="${FUZZ_SCRATCH:-/tmp/lanyard-fuzz}"

ensure_cargo_fuzz() {
  if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
  fi
}

build() {
  ensure_cargo_fuzz
  cargo fuzz build --sanitizer "$SANITIZER"
}

# run TARGET libfuzzer-args...
run() {
  local t="$1"
  shift
  mkdir -p "$SCRATCH/$t" "corpus/$t"
  local dirs=("$SCRATCH/$t" "corpus/$t")
  for d in "seeds/$t" "regressions/$t"; do
    [ -d "$d" ] && dirs+=("$d")
  done
  cargo fuzz run --sanitizer "$SANITIZER" "$t" "${dirs[@]}" -- \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$@"
}

case "${1:-}" in
  list) printf '%s\n' "${TARGETS[@]}" ;;
  build) build ;;
  run)
    build
    secs="${3:-600}"
    if [ "${2:-}" = all ]; then
      for t in "${TARGETS[@]}"; do run "$t" -max_total_time="$secs"; done
    else
      run "${2:?target}" -max_total_time="$secs"
    fi
    ;;
  runs)
    build
    run "${2:?target}" -runs="${3:?executions}"
    ;;
  smoke)
    build
    for t in "${TARGETS[@]}"; do
      log="$SCRATCH/$t.log"
      mkdir -p "$SCRATCH"
      if ! run "$t" -max_total_time="${2:-20}" >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz smoke: $t FAILED (crash input in fuzz/artifacts/$t/)"
        exit 1
      fi
      echo "fuzz smoke: $t ok, $(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$') executions"

    done
    ;;
  cmin)
    ensure_cargo_fuzz
    t="${2:?target}"
    mkdir -p "corpus/$t"
    # Merge the committed corpus and the scratch finds into a fresh dir (seeds
    # and regressions stay where they are, under their own names).
    tmp="$(mktemp -d)"
    dirs=("corpus/$t")
    [ -d "$SCRATCH/$t" ] && dirs+=("$SCRATCH/$t")
    cargo fuzz run --sanitizer "$SANITIZER" "$t" "$tmp" "${dirs[@]}" -- -merge=1
    rm -rf "corpus/$t"
    mv "$tmp" "corpus/$t"
    ;;
  *)
    sed -n '2,20p' "$0"
    exit 64
    ;;
esac
