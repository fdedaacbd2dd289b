"""The relay half of the PID-reuse and connect-then-exec attacks: passes bytes
between the first client of `listener` and `upstream` (a connection to the
agent that another process opened), both ways, until either side closes."""
import os
import socket
import threading


def serve(listener, upstream):
    # Let go of the caller's stdout and stderr, so that a test reading them
    # sees EOF when the attacker's main process is done.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    client, _ = listener.accept()

    def pump(src, dst):
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
    pump(upstream, client)
