#!/usr/bin/env bash
# Regenerates mesh-xds/src/dump/envoy.bin (Envoy's descriptor set for proto3 JSON dumps) from
# the envoy-types crate in use. Run after upgrading envoy-types, and commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
manifest=$(cargo metadata --format-version 1 --locked | python3 -c '
import json, sys
m = json.load(sys.stdin)
print(next(p["manifest_path"] for p in m["packages"] if p["name"] == "envoy-types"))')
cargo run -q -p mesh-xds --features config-dump --example envoy_descriptors -- \
  "$(dirname "$manifest")/src/generated/types.bin" mesh-xds/src/dump/envoy.bin
# mesh-proxy keeps only the files it reads (see mesh-proxy/src/descriptors/mod.rs).
MESH_REGENERATE_DESCRIPTORS=1 cargo test -q -p mesh-proxy --lib committed_subset_is_current
