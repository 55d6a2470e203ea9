#!/usr/bin/env python3
"""perf/pingpong.py [ROUNDS] [BYTES]: what one loopback round trip costs the side that
sleeps in epoll_wait between round trips, on this machine, with no broker involved.

A server pinned to CPU 0 (epoll, level-triggered, one socket) answers each request of
BYTES with BYTES; a client pinned to CPU 1 sends the next request when the answer is
in (closed loop, one in flight), like a broker and a subscriber at a small inflight
window. Prints the server's user and system CPU per round trip (getrusage) and its
voluntary context switches per round trip: the fixed kernel cost (sleep + wakeup +
read + write with the loopback receive of the peer) that a round-trip-bound broker pays
per window, whatever its own code does.
"""
import os, resource, select, socket, sys, time

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
SIZE = int(sys.argv[2]) if len(sys.argv) > 2 else 80

lsock = socket.socket()
lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lsock.bind(("127.0.0.1", 0))
lsock.listen(1)
port = lsock.getsockname()[1]
r, w = os.pipe()
pid = os.fork()
if pid == 0:  # client
    os.sched_setaffinity(0, {1})
    c = socket.create_connection(("127.0.0.1", port))
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    msg = b"x" * SIZE
    for _ in range(ROUNDS):
        c.sendall(msg)
        got = 0
        while got < SIZE:
            got += len(c.recv(65536))
    c.close()
    os._exit(0)
os.sched_setaffinity(0, {0})
s, _ = lsock.accept()
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.setblocking(False)
ep = select.epoll()
ep.register(s.fileno(), select.EPOLLIN)
before = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.monotonic()
n = 0
pending = 0
while n < ROUNDS:
    ep.poll()
    try:
        data = s.recv(65536)
    except BlockingIOError:
        continue
    if not data:
        break
    pending += len(data)
    while pending >= SIZE:
        pending -= SIZE
        s.send(b"y" * SIZE)
        n += 1
after = resource.getrusage(resource.RUSAGE_SELF)
wall = time.monotonic() - t0
os.waitpid(pid, 0)
user = (after.ru_utime - before.ru_utime) / n * 1e6
system = (after.ru_stime - before.ru_stime) / n * 1e6
csw = (after.ru_nvcsw - before.ru_nvcsw) / n
print(f"round trips {n}, {SIZE} B each way, wall {wall / n * 1e6:.1f} us per round trip")
print(f"server CPU per round trip: user {user:.1f} us, system {system:.1f} us; voluntary context switches {csw:.2f}")
