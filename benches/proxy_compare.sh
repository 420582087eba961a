#!/usr/bin/env bash
# Runs benches/proxy_compare.rs (Envoy and mesh-sidecar side by side) after making sure its
# tools are there:
#   - oha (open-loop latency runs): `cargo install oha --locked --root target/tools`, ~5 min;
#   - wrk (peak throughput; optional, oha is used without it): apt-get, when run as root;
#   - mesh-sidecar: built in release (`cargo build --release -p mesh-examples --bin
#     mesh-sidecar`) when --proxies asks for it (the default does), unless --no-build or
#     --sidecar PATH is given.
# Every other argument goes to the program, e.g.
#   bash benches/proxy_compare.sh --proxies envoy --duration 5s --repeats 1
#   bash benches/proxy_compare.sh                    # both proxies, 20 s x 3 repeats
# Not part of scripts/test.sh: a benchmark, minutes long, on a machine of its own if possible.
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
args=()
for a in "$@"; do
  if [[ "$a" == "--no-build" ]]; then build=0; else args+=("$a"); fi
done

if [[ ! -x target/tools/bin/oha ]] && ! command -v oha >/dev/null; then
  echo "== installing oha into target/tools (about 5 minutes)"
  cargo install oha --locked --root target/tools
fi

if ! command -v wrk >/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "== installing wrk (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null \
      || echo "wrk could not be installed: peak throughput will use oha"
  else
    echo "wrk not found (apt-get install wrk): peak throughput will use oha"
  fi
fi

# Which proxies: the value of --proxies (default both).
proxies="envoy,mesh"
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --proxies) proxies="${args[$((i + 1))]:-}" ;;
    --proxies=*) proxies="${args[$i]#--proxies=}" ;;
  esac
done
sidecar_custom=0
for a in "${args[@]}"; do [[ "$a" == --sidecar* ]] && sidecar_custom=1; done
if [[ ",$proxies," == *",mesh"* && $build == 1 && $sidecar_custom == 0 ]]; then
  # Always (cargo makes it a no-op when up to date): a stale sidecar would be measured otherwise.
  echo "== building mesh-sidecar (release)"
  cargo build --release -p mesh-examples --bin mesh-sidecar \
    || { echo "mesh-sidecar does not build: fix it, pass --sidecar PATH, or run with --proxies envoy"; exit 2; }
fi

exec cargo bench -p mesh-benches --bench proxy_compare -- "${args[@]}"
