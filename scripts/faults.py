#!/usr/bin/env python3
"""Load-and-fault cases against a facegate server on loopback (bounded; never another host).

Usage: scripts/faults.py [--port 8080] [--pid PID] [--case NAME ...]
Prints one line per case with its figure. Start the server first, e.g.
  ./target/release/facegate serve --listen 127.0.0.1:8080 --max-body-bytes-held 134217728
(--pid: the server's process id, for the memory figure).
"""
import argparse
import socket
import threading
import time

HOST = "127.0.0.1"


def get_health(port, timeout=60.0):
    t = time.monotonic()
    try:
        s = socket.create_connection((HOST, port), timeout=timeout)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = s.recv(64)
        s.close()
    except OSError as e:
        return time.monotonic() - t, f"no answer ({e})"
    return time.monotonic() - t, data.split(b"\r\n", 1)[0].decode(errors="replace")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def silent_sockets(args):
    """1,030 sockets that never send a byte, then one normal request."""
    socks = []
    for _ in range(1030):
        try:
            socks.append(socket.create_connection((HOST, args.port), timeout=5))
        except OSError:
            break
    time.sleep(3)
    took, status = get_health(args.port)
    closed = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        s.close()
    print(f"silent_sockets: {len(socks)} silent sockets open, /health answered in "
          f"{took * 1000:.0f} ms ({status}); {closed} silent sockets closed by the server")


def body_flood(args):
    """64 connections each streaming a 10 MiB body to /facegate/v1/analyze at once."""
    n, size = 64, 10 << 20
    before = rss_mib(args.pid) if args.pid else float("nan")
    peak = [before]
    answers = []
    lock = threading.Lock()

    def one():
        try:
            s = socket.create_connection((HOST, args.port), timeout=60)
            s.sendall(b"POST /facegate/v1/analyze HTTP/1.1\r\nHost: x\r\nContent-Type: "
                      b"image/jpeg\r\nContent-Length: %d\r\n\r\n" % size)
            chunk = b"\xff" * (1 << 20)
            try:
                for _ in range(size >> 20):
                    s.sendall(chunk)
            except OSError:
                pass
            status = s.recv(64).split(b"\r\n", 1)[0].decode(errors="replace")
            s.close()
        except OSError as e:
            status = f"error {e}"
        with lock:
            answers.append(status)

    def watch():
        while len(answers) < n:
            if args.pid:
                peak[0] = max(peak[0], rss_mib(args.pid))
            time.sleep(0.02)

    threads = [threading.Thread(target=one) for _ in range(n)]
    w = threading.Thread(target=watch)
    w.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.join()
    kinds = {}
    for a in answers:
        k = " ".join(a.split()[1:2]) or a
        kinds[k] = kinds.get(k, 0) + 1
    print(f"body_flood: {n} x {size >> 20} MiB bodies; answers {kinds}; server RSS "
          f"{before:.0f} -> peak {peak[0]:.0f} MiB (+{peak[0] - before:.0f} MiB)")


CASES = {"silent_sockets": silent_sockets, "body_flood": body_flood}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--pid", type=int)
    p.add_argument("--case", action="append", choices=sorted(CASES))
    args = p.parse_args()
    for name in args.case or list(CASES):
        CASES[name](args)
        time.sleep(1)


if __name__ == "__main__":
    main()
