#!/usr/bin/env python3
"""A user-space TCP forwarder that delays each direction by half a round trip (a WAN on loopback).

    python3 bench/delayfwd.py --rtt 100ms 127.89.0.1:2200=127.90.0.1:22 [LISTEN=UPSTREAM ...]

Every byte read from one side is written to the other RTT/2 later, in the order it was read
(one FIFO per direction, and the delay is constant, so order is kept). The TCP handshake is
emulated too: the kernel completes the client's connect() at once, so the forwarder connects
upstream only 1.5 RTT later — when a real server's accept() would return — and holds the
client's early bytes until then. The client therefore sees the server's first byte 2 RTT after
connecting, as over a real link. End of stream is delayed like data (shutdown(SHUT_WR) on the
other side). The model is latency only: no bandwidth limit, no loss, no slow start, no
Nagle/delayed-ACK interplay (both of the forwarder's sockets set TCP_NODELAY).

Why the kernel is not used: this machine has no netem (`tc qdisc ... netem` needs the
sch_netem module). One thread and one selector (epoll) serve every route, so 50 targets × 2
ports is a few hundred sockets and one timer heap; `--realtime` (SCHED_FIFO: it wakes ahead of
every ordinary process, and uses a few % of one core) keeps the endpoints' CPU load from
delaying it; epoll's millisecond timeout puts a
delivery within about ±0.5 ms of its time (plus scheduling delay); the trace records it.

`--trace FILE` writes one tab-separated line per event, flushed at exit (SIGTERM):
  O t conn listen_addr           a client connected (t: CLOCK_MONOTONIC seconds)
  R t conn dir bytes             read from the client (dir c) or the server (dir s)
  W t conn dir bytes late_ms     written to the other side, late_ms after it was due
  C t conn                       both sides closed
Standard library only; bench/fleetbench.py starts one process per RTT and stops it by PID.
"""

from __future__ import annotations

import argparse
import collections
import errno
import heapq
import itertools
import os
import selectors
import signal
import socket
import sys
import time

CHUNK = 256 * 1024
EARLY = 0.0005  # seconds a delivery may go out before it is due (see run)


def parse_duration(text: str) -> float:
    """'100ms', '0.1s', '100' (ms) -> seconds."""
    t = text.strip()
    if t.endswith("ms"):
        return float(t[:-2]) / 1000
    if t.endswith("s"):
        return float(t[:-1])
    return float(t) / 1000


def parse_addr(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host.strip("[]"), int(port)


class Side:
    """One socket of a connection and what waits to be written to it."""

    def __init__(self, sock: socket.socket | None):
        self.sock = sock
        self.out = bytearray()  # due data not yet accepted by the kernel
        self.reading = True  # until EOF or error
        self.eof_due = False  # the other side's EOF reached its time: shutdown after `out`
        self.shut = False
        self.events = 0


class Conn:
    ids = itertools.count(1)

    def __init__(self, fwd: "Forwarder", client: socket.socket, upstream: tuple[str, int], listen: str):
        self.fwd = fwd
        self.id = next(Conn.ids)
        self.listen = listen
        self.upstream = upstream
        self.client = Side(client)
        self.server = Side(None)
        self.connected = False
        self.closed = False
        # per direction: (due, bytes) or (due, None) for EOF; dues are non-decreasing
        self.queues = {"c": collections.deque(), "s": collections.deque()}

    def side(self, d: str) -> Side:
        return self.client if d == "c" else self.server

    def other(self, d: str) -> Side:
        return self.server if d == "c" else self.client


class Forwarder:
    def __init__(self, rtt: float, routes: list[tuple[tuple[str, int], tuple[str, int]]], trace_path: str | None):
        self.half = rtt / 2
        self.connect_delay = 1.5 * rtt  # when a real server's accept() returns
        self.sel = selectors.DefaultSelector()
        self.timers: list = []  # (due, seq, kind, conn, dir)
        self.seq = itertools.count()
        self.trace = open(trace_path, "w", buffering=1 << 20) if trace_path else None
        self.listeners = []
        for listen, upstream in routes:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(listen)
            s.listen(1024)
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ, ("listen", upstream, f"{listen[0]}:{listen[1]}"))
            self.listeners.append(s)

    def log(self, *fields) -> None:
        if self.trace:
            self.trace.write("\t".join(str(f) for f in fields) + "\n")

    def timer(self, due: float, kind: str, conn: Conn, d: str = "") -> None:
        heapq.heappush(self.timers, (due, next(self.seq), kind, conn, d))

    # ---- readiness bookkeeping

    def update(self, side: Side, conn: Conn) -> None:
        if side.sock is None or conn.closed:
            return
        ev = 0
        if side.reading and (side is conn.client or conn.connected):
            ev |= selectors.EVENT_READ
        if side.out or (side is conn.server and not conn.connected):
            ev |= selectors.EVENT_WRITE
        if ev == side.events:
            return
        if side.events == 0:
            self.sel.register(side.sock, ev, ("conn", conn, side))
        elif ev == 0:
            self.sel.unregister(side.sock)
        else:
            self.sel.modify(side.sock, ev, ("conn", conn, side))
        side.events = ev

    # ---- events

    def accept(self, lsock: socket.socket, upstream, listen: str) -> None:
        while True:
            try:
                c, _ = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE and friends: leave it in the backlog
                print(f"delayfwd: accept on {listen}: {e}", file=sys.stderr, flush=True)
                return
            c.setblocking(False)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Conn(self, c, upstream, listen)
            self.log("O", f"{time.monotonic():.6f}", conn.id, listen)
            self.update(conn.client, conn)
            if self.connect_delay > 0:
                self.timer(time.monotonic() + self.connect_delay, "connect", conn)
            else:
                self.connect(conn)

    def connect(self, conn: Conn) -> None:
        if conn.closed:
            return
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.server.sock = s
        rc = s.connect_ex(conn.upstream)
        if rc not in (0, errno.EINPROGRESS):
            self.fail(conn, f"connect {conn.upstream}: {errno.errorcode.get(rc, rc)}")
            return
        self.update(conn.server, conn)

    def connect_done(self, conn: Conn) -> None:
        rc = conn.server.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if rc:
            self.fail(conn, f"connect {conn.upstream}: {errno.errorcode.get(rc, rc)}")
            return
        conn.connected = True
        self.flush(conn.server, conn)
        self.update(conn.server, conn)

    def read(self, conn: Conn, side: Side) -> None:
        d = "c" if side is conn.client else "s"
        try:
            data = side.sock.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""  # a reset ends the stream like an EOF, RTT/2 later
        now = time.monotonic()
        if data:
            self.log("R", f"{now:.6f}", conn.id, d, len(data))
            conn.queues[d].append((now + self.half, data))
        else:
            self.log("R", f"{now:.6f}", conn.id, d, 0)
            side.reading = False
            conn.queues[d].append((now + self.half, None))
            self.update(side, conn)
        self.timer(now + self.half, "deliver", conn, d)

    def deliver(self, conn: Conn, d: str) -> None:
        """The head of direction d is due: hand it to the other side."""
        if conn.closed or not conn.queues[d]:
            return
        due, data = conn.queues[d].popleft()
        dst = conn.other(d)
        if data is None:
            dst.eof_due = True
        else:
            dst.out += data
            self.log("W", f"{time.monotonic():.6f}", conn.id, d, len(data), f"{(time.monotonic() - due) * 1000:.3f}")
        self.flush(dst, conn)
        self.update(dst, conn)

    def flush(self, side: Side, conn: Conn) -> None:
        if side.sock is None or (side is conn.server and not conn.connected):
            return
        while side.out:
            try:
                n = side.sock.send(side.out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # the peer reset: so does the other side, now
                self.close(conn)
                return
            del side.out[:n]
        if side.eof_due and not side.shut:
            side.shut = True
            try:
                side.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        self.maybe_close(conn)

    def maybe_close(self, conn: Conn) -> None:
        """Closed once both directions have delivered their EOF (or cannot deliver any more)."""
        done = all(s.shut or s.sock is None for s in (conn.client, conn.server)) and not conn.queues["c"] and not conn.queues["s"]
        if done and not conn.closed:
            self.close(conn)

    def fail(self, conn: Conn, why: str) -> None:
        print(f"delayfwd: conn {conn.id} via {conn.listen}: {why}", file=sys.stderr, flush=True)
        self.close(conn)

    def close(self, conn: Conn) -> None:
        if conn.closed:
            return
        for s in (conn.client, conn.server):
            if s.sock is not None:
                if s.events:
                    self.sel.unregister(s.sock)
                    s.events = 0
                s.sock.close()
        conn.closed = True
        self.log("C", f"{time.monotonic():.6f}", conn.id)

    # ---- the loop

    def run(self) -> None:
        while True:
            timeout = None
            if self.timers:
                # epoll counts whole milliseconds (rounding up): wake at the millisecond below
                # and deliver what is due within EARLY, so a delivery is within ±0.5 ms.
                timeout = max(0.0, int((self.timers[0][0] - time.monotonic()) * 1000) / 1000)
            for key, mask in self.sel.select(timeout):
                tag = key.data
                if tag[0] == "listen":
                    self.accept(key.fileobj, tag[1], tag[2])
                    continue
                _, conn, side = tag
                if conn.closed:
                    continue
                if side is conn.server and not conn.connected and mask & selectors.EVENT_WRITE:
                    self.connect_done(conn)
                    continue
                if mask & selectors.EVENT_READ:
                    self.read(conn, side)
                if not conn.closed and mask & selectors.EVENT_WRITE:
                    self.flush(side, conn)
                    self.update(side, conn)
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now + EARLY:
                _, _, kind, conn, d = heapq.heappop(self.timers)
                if kind == "connect":
                    self.connect(conn)
                else:
                    self.deliver(conn, d)

    def stop(self) -> None:
        if self.trace:
            self.trace.flush()


def main() -> int:
    p = argparse.ArgumentParser(description="TCP forwarder delaying each direction by RTT/2 (order kept)")
    p.add_argument("--rtt", default="100ms", help="round-trip time to add, e.g. 100ms, 0.25s, 0 (default 100ms)")
    p.add_argument("--trace", help="write one line per connection, read, write and close (see the module doc)")
    p.add_argument("--realtime", action="store_true", help="run under SCHED_FIFO (needs root; else nice -15): the network should "
                   "not wait for the endpoints' CPU (the bench sets it)")
    p.add_argument("routes", nargs="+", metavar="LISTEN=UPSTREAM", help="e.g. 127.89.0.1:2200=127.90.0.1:22")
    a = p.parse_args()
    routes = []
    for r in a.routes:
        listen, upstream = r.split("=", 1)
        routes.append((parse_addr(listen), parse_addr(upstream)))
    if a.realtime:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        except OSError as e:
            print(f"delayfwd: SCHED_FIFO refused ({e}); nice -15 instead", file=sys.stderr, flush=True)
            try:
                os.setpriority(os.PRIO_PROCESS, 0, -15)
            except OSError:
                pass
    fwd = Forwarder(parse_duration(a.rtt), routes, a.trace)

    def stop(*_):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        fwd.run()
    finally:
        fwd.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
