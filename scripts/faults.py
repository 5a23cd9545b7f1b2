#!/usr/bin/env python3
"""Load-and-fault cases against a facegate server on loopback (bounded; never another host).

Usage: scripts/faults.py [--port 8080] [--pid PID] [--case NAME ...] [--facegate BIN]
Prints one line per case with its figure. Start the server first, e.g.
  ./target/release/facegate serve --listen 127.0.0.1:8080 --max-body-bytes-held 134217728
(--pid: the server's process id, for the memory figures; --facegate: the binary whose
`bench` drives the storm case, by default ./target/release/facegate). Python 3 standard
library only: HTTP/1.1 and the HTTP/2 frames the h2 case needs are written by hand.
"""
import argparse
import json
import os
import socket
import struct
import subprocess
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


def http(port, method, path, body=b"", headers=(), timeout=60.0):
    """One request on a fresh connection: (status, headers text, body, seconds)."""
    t = time.monotonic()
    s = socket.create_connection((HOST, port), timeout=timeout)
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers)
    head += f"Content-Length: {len(body)}\r\n\r\n"
    s.sendall(head.encode() + body)
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    s.close()
    took = time.monotonic() - t
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head[9:12]) if head.startswith(b"HTTP/1.") else 0
    return status, head.decode(errors="replace"), rest, took


def short(b, n=110):
    t = b.decode(errors="replace").replace("\n", " ")
    return t if len(t) <= n else t[:n] + "..."


def multipart(parts):
    """(content type, body) of form-data parts [(name, filename or None, bytes)]."""
    boundary = "faults-boundary"
    out = b""
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", out


def flat_jpeg(width, height):
    """A baseline greyscale JPEG of one flat grey (every block: DC difference 0, then EOB),
    declaring width x height pixels in a few hundred KB: cheap to send, costly to decode in
    full."""
    dc_bits = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    dc_vals = list(range(12))
    ac_bits = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D]
    ac_vals = bytes.fromhex(
        "01020300041105122131410613516107227114328191a1082342b1c11552d1f02433627282090a161718191a25262728292a3435363738393a434445464748494a535455565758595a636465666768696a737475767778797a838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9fa")

    def seg(marker, payload):
        return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload

    out = b"\xff\xd8"
    out += seg(0xDB, b"\x00" + b"\x01" * 64)
    out += seg(0xC0, b"\x08" + struct.pack(">HH", height, width) + b"\x01\x01\x11\x00")
    out += seg(0xC4, b"\x00" + bytes(dc_bits) + bytes(dc_vals))
    out += seg(0xC4, b"\x10" + bytes(ac_bits) + ac_vals)
    out += seg(0xDA, b"\x01\x01\x00\x00\x3f\x00")
    blocks = ((width + 7) // 8) * ((height + 7) // 8)
    # Each block is the 6 bits 00 (DC category 0) 1010 (EOB): 4 blocks make the 3 bytes
    # 28 A2 8A, none of them 0xFF (no stuffing).
    out += b"\x28\xa2\x8a" * (blocks // 4)
    tail = "001010" * (blocks % 4)
    if tail:
        tail += "1" * (-len(tail) % 8)
        out += int(tail, 2).to_bytes(len(tail) // 8, "big")
    return out + b"\xff\xd9"


def fixture(name):
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "..", "shared", "fixtures", "faces", name), "rb") as f:
        return f.read()


def bounded_work(args):
    """300,000 /check_image pipelines entries, a truncated JPEG, a small JPEG declaring
    6000x6000 pixels."""
    entries = ",".join(['{"pipeline":"minifasnet-dual"}'] * 300_000)
    data = ('{"pipelines":[' + entries + "]}").encode()
    ct, body = multipart([("data", None, data), ("image", "t1.jpg", fixture("image_T1.jpg"))])
    status, _, rest, took = http(args.port, "POST", "/check_image", body, [("Content-Type", ct)])
    print(f"pipelines: {len(data) >> 20} MiB with 300,000 entries answered {status} in "
          f"{took * 1000:.0f} ms: {short(rest)}")
    t1 = fixture("image_T1.jpg")
    status, _, rest, took = http(args.port, "POST", "/facegate/v1/analyze", t1[: len(t1) // 3],
                                 [("Content-Type", "image/jpeg")])
    print(f"truncated_jpeg: the first third of image_T1.jpg answered {status} in "
          f"{took * 1000:.0f} ms: {short(rest)}")
    big = flat_jpeg(6000, 6000)
    before = rss_mib(args.pid) if args.pid else float("nan")
    times = []
    for _ in range(10):
        status, _, rest, took = http(args.port, "POST", "/facegate/v1/analyze", big,
                                     [("Content-Type", "image/jpeg")])
        times.append(took * 1000)
    after = rss_mib(args.pid) if args.pid else float("nan")
    times.sort()
    print(f"huge_dimensions: a {len(big) >> 10} KiB JPEG declaring 6000x6000 answered {status} "
          f"in p50 {times[4]:.1f} ms / max {times[-1]:.1f} ms (10 tries); server RSS "
          f"{before:.0f} -> {after:.0f} MiB: {short(rest, 80)}")


def nonce_flood(args):
    """IAD nonces until the registry's bound: issue times at the start and at the end,
    /health meanwhile, and what happens past the bound."""
    s = socket.create_connection((HOST, args.port), timeout=60)
    buf = b""

    def one():
        nonlocal buf
        t = time.monotonic()
        s.sendall(b"POST /nonce HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        head, _, buf = buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        while len(buf) < length:
            buf += s.recv(65536)
        body, buf = buf[:length], buf[length:]
        return int(head[9:12]), body, (time.monotonic() - t) * 1000

    first, last, health, issued, refused = [], [], [], 0, None
    while issued < args.max_nonces + 10:
        status, body, ms = one()
        if status != 200:
            refused = (issued, status, body)
            break
        issued += 1
        (first if issued <= 1000 else last).append(ms)
        last[:] = last[-1000:]
        if issued % 10_000 == 0:
            health.append(get_health(args.port)[0] * 1000)
    s.close()
    first.sort()
    last.sort()
    tail = (f"nonce {refused[0] + 1} answered {refused[1]}: {short(refused[2], 90)}"
            if refused else "never refused")
    print(f"nonce_flood: {issued} nonces issued; issue p50 {first[len(first) // 2]:.2f} ms "
          f"p99 {first[int(len(first) * 0.99)]:.2f} ms for the first 1,000, p50 "
          f"{last[len(last) // 2]:.2f} ms p99 {last[int(len(last) * 0.99)]:.2f} ms for the last "
          f"1,000; /health every 10,000 max {max(health or [0]):.1f} ms; {tail}")


def h2_frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def hpack_literal(headers):
    """HPACK literal fields without indexing, no Huffman (every name and value under 127)."""
    out = b""
    for k, v in headers:
        out += b"\x00" + bytes([len(k)]) + k.encode() + bytes([len(v)]) + v.encode()
    return out


def h2_body_flood(args):
    """One HTTP/2 connection with 256 streams, each announcing a 10 MiB body and sending as
    much of it as the server's flow control lets it."""
    streams, size = 256, 10 << 20
    before = rss_mib(args.pid) if args.pid else float("nan")
    peak = [before]
    s = socket.create_connection((HOST, args.port), timeout=30)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0))
    lock = threading.Lock()
    window = {0: 65535}
    initial = [65535]  # the server's SETTINGS_INITIAL_WINDOW_SIZE, for streams opened later
    sent = {}
    answers = {}
    bodies = {}
    done = threading.Event()

    def reader():
        data = b""
        try:
            while not done.is_set():
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                while len(data) >= 9:
                    n = int.from_bytes(data[:3], "big")
                    if len(data) < 9 + n:
                        break
                    kind, flags = data[3], data[4]
                    sid = int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
                    payload, data = data[9:9 + n], data[9 + n:]
                    with lock:
                        if kind == 4 and not flags & 1:  # SETTINGS: ack, note the window
                            for i in range(0, len(payload), 6):
                                key, val = struct.unpack(">HI", payload[i:i + 6])
                                if key == 4:
                                    for k in list(window):
                                        if k:
                                            window[k] += val - initial[0]
                                    initial[0] = val
                            s.sendall(h2_frame(4, 1, 0))
                        elif kind == 8:  # WINDOW_UPDATE
                            window[sid] = window.get(sid, initial[0]) + (int.from_bytes(payload, "big") & 0x7FFFFFFF)
                        elif kind == 1:  # HEADERS: an answer (its kind is in its body)
                            answers.setdefault(sid, "answered")
                        elif kind == 0:  # DATA of an answer
                            bodies[sid] = bodies.get(sid, b"") + payload
                        elif kind == 3:  # RST_STREAM
                            answers.setdefault(sid, "reset")
                        elif kind == 6 and not flags & 1:  # PING
                            s.sendall(h2_frame(6, 1, 0, payload))
                        elif kind == 7:  # GOAWAY
                            done.set()
        except OSError:
            pass

    threading.Thread(target=reader, daemon=True).start()
    time.sleep(0.2)
    for i in range(streams):
        sid = 2 * i + 1
        headers = [(":method", "POST"), (":scheme", "http"), (":path", "/facegate/v1/analyze"),
                   (":authority", "x"), ("content-type", "image/jpeg"),
                   ("content-length", str(size))]
        with lock:
            window.setdefault(sid, initial[0])
            sent[sid] = 0
            s.sendall(h2_frame(1, 4, sid, hpack_literal(headers)))
    chunk = b"\xff" * 16384
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not done.is_set():
        progressed = False
        for sid in list(sent):
            with lock:
                if sid in answers or sent[sid] >= size:
                    continue
                n = min(len(chunk), window.get(sid, 0), window[0], size - sent[sid])
                if n <= 0:
                    continue
                window[sid] -= n
                window[0] -= n
                sent[sid] += n
            try:
                s.sendall(h2_frame(0, 1 if sent[sid] >= size else 0, sid, chunk[:n]))
            except OSError:
                done.set()
                break
            progressed = True
        if args.pid:
            peak[0] = max(peak[0], rss_mib(args.pid))
        if not progressed:
            time.sleep(0.01)
    done.set()
    s.close()
    kinds = {}
    for sid in sent:
        k = answers.get(sid, "no answer (admitted, reading its body)")
        try:
            k = json.loads(bodies.get(sid, b""))["error"]["kind"]
        except (ValueError, KeyError, TypeError):
            pass
        kinds[k] = kinds.get(k, 0) + 1
    total = sum(sent.values())
    print(f"h2_body_flood: {streams} streams x {size >> 20} MiB on one connection; "
          f"{total >> 20} MiB sent in 20 s; answers {kinds}; server RSS {before:.0f} -> peak "
          f"{peak[0]:.0f} MiB (+{peak[0] - before:.0f} MiB)")


def storm(args):
    """The unloaded peak (8 connections) against a 600-connection storm, by `facegate bench`."""
    def run(*extra):
        out = subprocess.run([args.facegate, "bench", "--port", str(args.port), "--image",
                              args.image, *extra], capture_output=True, text=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    peak = run("--concurrency", "8", "--duration", "10", "--warmup", "20")
    st = run("--concurrency", "600", "--duration", "10")
    refusals = sum(v for k, v in st["errors"].items() if k in ("429", "503"))
    print(f"storm: peak {peak['ok_per_s']:.0f} ok/s with 8 connections; 600-connection storm "
          f"{st['ok_per_s']:.0f} ok/s ({100 * st['ok_per_s'] / peak['ok_per_s']:.0f} % of the "
          f"peak), {refusals} refusals (p99 {st['refused_latency_ms']['p99']:.1f} ms), errors "
          f"{st['errors']}")


CASES = {
    "silent_sockets": silent_sockets,
    "body_flood": body_flood,
    "h2_body_flood": h2_body_flood,
    "bounded_work": bounded_work,
    "nonce_flood": nonce_flood,
    "storm": storm,
}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--pid", type=int)
    p.add_argument("--case", action="append", choices=sorted(CASES))
    p.add_argument("--facegate", default="./target/release/facegate")
    p.add_argument("--image", default="../shared/fixtures/faces/image_T1.jpg")
    p.add_argument("--max-nonces", type=int, default=100_000,
                   help="the server's iad.capture.max_nonces")
    args = p.parse_args()
    for name in args.case or list(CASES):
        CASES[name](args)
        time.sleep(1)


if __name__ == "__main__":
    main()
