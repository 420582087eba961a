#!/usr/bin/env bash
# Runs every check and test of the workspace. This is the README's test command and what CI
# runs (.ci/run). It provisions what the tests need by itself; today that is only the Rust
# toolchain with rustfmt and clippy. Later stages add real Envoy and grpcio (pip, in a venv
# under target/) here, so a fresh machine needs nothing but this script.
set -euo pipefail
cd "$(dirname "$0")/.."

need() {
    if ! "$@" >/dev/null 2>&1; then
        echo "scripts/test.sh: '$*' failed; install the Rust toolchain with rustfmt and clippy" >&2
        exit 2
    fi
}
need cargo --version
need cargo fmt --version
need cargo clippy --version

# Two cores: keep the build to one profile and let cargo use both.
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy (default features, then all features)"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

echo "== cargo test (all features: proptest strategies and the kube integration included)"
cargo test --workspace --all-features --locked
