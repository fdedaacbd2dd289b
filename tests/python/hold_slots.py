"""Holds as many agent connections as it can, the way the review's attacker
did: from several uids at once (argv[3:], each a uid this process may become),
each connection sending only the HTTP/2 preface and never a request.

Prints one line, `held N`, once every uid has tried argv[2] connections, then
keeps them open until stdin closes; then prints `closed M`: how many of the held
connections the agent had closed by then."""
import os
import socket
import sys

path, per_uid, uids = sys.argv[1], int(sys.argv[2]), [int(u) for u in sys.argv[3:]]
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def grab(n):
    held = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            s.sendall(PREFACE)
        except OSError:
            s.close()
            continue
        held.append(s)
    # A refused connection is closed at once by the agent: EOF within a moment.
    alive = []
    for s in held:
        s.settimeout(0.3)
        try:
            while True:
                data = s.recv(4096)
                if not data:
                    s.close()
                    break
        except socket.timeout:
            alive.append(s)
        except OSError:
            s.close()
    return alive


def still_open(conns):
    n = 0
    for s in conns:
        s.settimeout(0.05)
        try:
            while True:
                data = s.recv(4096)
                if not data:
                    break
        except socket.timeout:
            n += 1
        except OSError:
            pass
    return n


r, w = os.pipe()
children = []
for uid in uids:
    pid = os.fork()
    if pid == 0:
        os.close(r)
        if uid != os.getuid():
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        conns = grab(per_uid)
        os.write(w, f"{len(conns)}\n".encode())
        sys.stdin.read()
        os.write(w, f"open {still_open(conns)}\n".encode())
        os._exit(0)
    children.append(pid)
os.close(w)
reader = os.fdopen(r)
total = sum(int(reader.readline()) for _ in uids)
print(f"held {total}", flush=True)
sys.stdin.read()
open_now = sum(int(reader.readline().split()[1]) for _ in uids)
for pid in children:
    os.waitpid(pid, 0)
print(f"closed {total - open_now}", flush=True)
