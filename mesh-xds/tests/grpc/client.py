"""A proxyless gRPC client: dials TARGET (xds:///host:port) through the xDS bootstrap in
$GRPC_XDS_BOOTSTRAP and makes N calls, printing the count of answers per server as JSON.

Usage: client.py TARGET N
"""
import collections
import json
import sys

import grpc

target, n = sys.argv[1], int(sys.argv[2])
channel = grpc.insecure_channel(target)
hi = channel.unary_unary("/mesh.test.Echo/Hi")
counts = collections.Counter()
for _ in range(n):
    counts[hi(b"", wait_for_ready=True, timeout=30).decode()] += 1
print(json.dumps(counts), flush=True)
