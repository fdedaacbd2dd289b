#!/usr/bin/env bash
# The shipped binary's size (issue 14, "a binary an IoT gateway wants"): builds
# `lanyard` with the `dist` profile twice, full and agent-only (no issuer, no
# SQLite or PostgreSQL), and fails when either is over its goal. The sizes are
# of the stripped files, as they ship.
#
#   scripts/size-check.sh            build both, check, print a line each
set -euo pipefail
cd "$(dirname "$0")/.."

FULL_GOAL=15000000  # bytes: 15 MB
AGENT_GOAL=8000000  # bytes: 8 MB

check() {
  local what="$1" goal="$2" out="$3"
  shift 3
  cargo build --profile dist -p lanyard --locked "$@"
  cp target/dist/lanyard "$out"
  local size
  size=$(stat -c %s "$out")
  printf '%-11s %9d bytes (%.1f MB), goal %d bytes\n' "$what" "$size" "$(awk -v s="$size" 'BEGIN { print s / 1000000 }')" "$goal"
  if [ "$size" -gt "$goal" ]; then
    echo "size-check: the $what binary is over its goal" >&2
    return 1
  fi
}

mkdir -p target/size
check agent-only "$AGENT_GOAL" target/size/lanyard-agent-only --no-default-features
check full "$FULL_GOAL" target/size/lanyard
# The agent-only binary really has no issuer in it.
if target/size/lanyard-agent-only issuer --help >/dev/null 2>&1; then
  echo "size-check: the agent-only binary still has the issuer command" >&2
  exit 1
fi
target/size/lanyard-agent-only --version
