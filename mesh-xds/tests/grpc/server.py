"""A gRPC server for the proxyless tests: answers /mesh.test.Echo/Hi with its own name.

Uses a generic handler on raw bytes, so no protobuf code generation is needed.
Usage: server.py NAME PORT  (prints "ready" once serving; exits when stdin closes)
"""
import sys
from concurrent import futures

import grpc

name, port = sys.argv[1], int(sys.argv[2])


def hi(request, context):
    return name.encode()


handler = grpc.method_handlers_generic_handler(
    "mesh.test.Echo", {"Hi": grpc.unary_unary_rpc_method_handler(hi)}
)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port(f"127.0.0.1:{port}")
server.start()
print("ready", flush=True)
sys.stdin.read()
server.stop(0)
