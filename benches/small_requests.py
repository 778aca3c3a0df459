#!/usr/bin/env python3
"""Proxy CPU per small request: registry-edge against nginx, HAProxy and Caddy, one run.

Each proxy terminates TLS (the same certificate, TLS 1.2/1.3, h2 and HTTP/1.1), sets the
forwarding headers and streams without buffering to the same fast upstream
(examples/fast_upstream.rs, 512 B blobs) over HTTP/1.1 keep-alive. The proxy runs with one
worker pinned to CPU 1 (taskset); the load generator (h2load, 32 connections) and the
upstream share CPU 0. For every peer, h1 and h2, alternating peers across repetitions:

- CPU per request: user + system time of all the proxy's processes (/proc/PID/stat of the
  process and its children) divided by the requests completed, at saturation, and at a fixed
  offered rate well below it (`h2load --rps`), with p50/p99 latency at that rate (from
  h2load's per-request `--log-file`);
- requests/s at saturation;
- syscalls and send calls per request (`strace -c -f` over a separate run);
- TLS records per small response (a counting relay in front of the proxy, one connection).

Configs of the peers are in benches/peers/. Several edge binaries can be compared
(--edge OLD --edge NEW). Output: a Markdown table (medians) on stdout and in --out.

    cargo build --release --bin registry-edge --example fast_upstream
    python3 benches/small_requests.py --reps 3
"""

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.join(ROOT, "benches", "peers")
TICK = os.sysconf("SC_CLK_TCK")
URL_PATH = "/v2/bench/small/blobs/sha256:0"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """User + system CPU of `pid` and its live children, in seconds."""
    total = 0.0
    pids = [pid] + [int(p) for p in subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]
    for p in pids:
        try:
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def wait_ready(url, deadline_s=30):
    end = time.time() + deadline_s
    while time.time() < end:
        code = subprocess.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", url],
                              capture_output=True, text=True).stdout
        if code == "200":
            return
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer 200 within {deadline_s}s")


def render(template, **values):
    text = open(os.path.join(PEERS, template)).read()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", str(value))
    return text


class Peer:
    def __init__(self, name, work, certs, upstream):
        self.name, self.work, self.certs, self.upstream = name, work, certs, upstream
        self.proc = None
        self.port = None

    def start(self):
        self.port = free_port()
        cmd = self.command()
        log = open(os.path.join(self.work, f"{self.name.replace('/', '_')}-{self.port}.log"), "w")
        self.proc = subprocess.Popen(["taskset", "-c", "1"] + cmd, stdout=log, stderr=log,
                                     cwd=self.work)
        wait_ready(self.url())

    def stop(self):
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def url(self):
        return f"https://127.0.0.1:{self.port}{URL_PATH}"

    def write(self, name, text):
        path = os.path.join(self.work, name)
        open(path, "w").write(text)
        return path


class Edge(Peer):
    def __init__(self, binary, *args):
        super().__init__(f"edge:{os.path.basename(binary)}", *args)
        self.binary = binary

    def command(self):
        conf = self.write(f"edge-{self.port}.yaml", render(
            "registry-edge.yaml", port=self.port, upstream=self.upstream, certs=self.certs))
        return [self.binary, "run", "--config", conf]


class Nginx(Peer):
    def command(self):
        d = os.path.join(self.work, f"nginx-{self.port}")
        os.makedirs(d, exist_ok=True)
        conf = self.write(f"nginx-{self.port}.conf", render(
            "nginx.conf", port=self.port, upstream=self.upstream, certs=self.certs, dir=d))
        return ["nginx", "-c", conf, "-e", "stderr"]


class Haproxy(Peer):
    def command(self):
        pem = os.path.join(self.work, "haproxy.pem")
        with open(pem, "w") as f:
            f.write(open(f"{self.certs}/tls.crt").read() + open(f"{self.certs}/tls.key").read())
        conf = self.write(f"haproxy-{self.port}.cfg", render(
            "haproxy.cfg", port=self.port, upstream=self.upstream, pem=pem))
        return ["haproxy", "-db", "-f", conf]


class Caddy(Peer):
    def command(self):
        conf = self.write(f"Caddyfile-{self.port}", render(
            "Caddyfile", port=self.port, upstream=self.upstream, certs=self.certs))
        return ["env", f"HOME={self.work}", f"XDG_DATA_HOME={self.work}/caddy-data",
                f"XDG_CONFIG_HOME={self.work}/caddy-config",
                "caddy", "run", "--config", conf, "--adapter", "caddyfile"]


def h2load(url, proto, n, rps=None, clients=32, log=None):
    """(succeeded, requests/s, (p50 ms, p99 ms) or None); percentiles need `log`, a path for
    h2load's per-request log (h2load itself prints only min/max/mean)."""
    cmd = ["taskset", "-c", "0", "h2load", "-n", str(n), "-c", str(clients)]
    if proto == "h1":
        cmd.append("--h1")
    if rps:
        cmd += ["--rps", str(rps)]
    if log:
        cmd += ["--log-file", log]
    out = subprocess.run(cmd + [url], capture_output=True, text=True).stdout
    ok = int(re.search(r"(\d+) succeeded", out).group(1))
    rate = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    return ok, rate, percentiles(log) if log else None


def percentiles(log):
    """p50 and p99 in ms from an h2load --log-file (third column: µs to end of response)."""
    times = sorted(int(line.split("\t")[2]) for line in open(log)
                   if line.count("\t") >= 2 and line.split("\t")[1] != "-1")
    if not times:
        return float("nan"), float("nan")
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))] / 1000
    return pick(0.50), pick(0.99)


class RecordCounter:
    """A loopback relay in front of a proxy that counts the TLS records (RFC 8446 §5.1: a
    5-byte header, then `length` bytes) the proxy sends to the client."""

    def __init__(self, target_port):
        self.target = target_port
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.records = 0
        self.pipes = 0  # copying threads still running
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.pipes += 2
            threading.Thread(target=self.pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self.pipe, args=(server, client, True), daemon=True).start()

    def pipe(self, src, dst, count):
        header, need = b"", 5  # bytes of the record header seen; bytes left in this part
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                while count and data:
                    if len(header) < 5:
                        take = data[:5 - len(header)]
                        header += take
                        data = data[len(take):]
                        if len(header) == 5:
                            need = int.from_bytes(header[3:5], "big")
                            with self.lock:
                                self.records += 1
                    else:
                        skip = min(need, len(data))
                        need -= skip
                        data = data[skip:]
                        if need == 0:
                            header = b""
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self.lock:
            self.pipes -= 1

    def settled(self, deadline_s=10):
        """Waits until every relayed connection has closed both ways."""
        end = time.time() + deadline_s
        while time.time() < end:
            with self.lock:
                if self.pipes == 0:
                    return
            time.sleep(0.01)
        raise SystemExit("the TLS record relay did not see its connections close")

    def close(self):
        self.listener.close()


def records_per_response(peer, proto):
    """TLS records the proxy sends per small response on one connection: the difference of a
    long and a short run, so the handshake, tickets and h2 settings drop out."""
    relay = RecordCounter(peer.port)
    url = f"https://127.0.0.1:{relay.port}{URL_PATH}"
    counts = []
    for n in (100, 600):
        with relay.lock:
            relay.records = 0
        ok, _, _ = h2load(url, proto, n, clients=1)
        relay.settled()
        with relay.lock:
            counts.append((relay.records, ok))
    relay.close()
    (short, ok_short), (long, ok_long) = counts
    return (long - short) / max(1, ok_long - ok_short)


def syscalls(peer, proto, n):
    """(syscalls, send calls) per request under strace -c -f."""
    out = os.path.join(peer.work, f"strace-{peer.port}-{proto}.txt")
    # The workers already run (nginx, Caddy's threads): attach to every process by pid;
    # -f follows the threads.
    pids = [peer.proc.pid] + [int(p) for p in subprocess.run(
        ["pgrep", "-P", str(peer.proc.pid)], capture_output=True, text=True).stdout.split()]
    attach = [arg for pid in pids for arg in ("-p", str(pid))]
    st = subprocess.Popen(["strace", "-c", "-f", "-q", "-o", out] + attach)
    time.sleep(1.0)
    ok, _, _ = h2load(peer.url(), proto, n)
    st.terminate()
    st.wait()
    total = sends = 0
    for line in open(out):
        parts = line.split()
        if len(parts) >= 5 and parts[-1] == "total":
            total = int(parts[3])
        elif len(parts) >= 5 and parts[-1] in ("sendto", "write", "writev", "sendmsg"):
            sends += int(parts[3])
    return total / ok, sends / ok


def measure(peer, args):
    row = {}
    log = os.path.join(peer.work, "h2load-requests.tsv")
    for proto in ("h1", "h2"):
        h2load(peer.url(), proto, 2000)  # warm-up: connections, sessions, pools
        before = cpu_seconds(peer.proc.pid)
        ok, rate, _ = h2load(peer.url(), proto, args.requests)
        row[f"{proto} CPU µs/request, saturated"] = (cpu_seconds(peer.proc.pid) - before) / ok * 1e6
        row[f"{proto} requests/s, saturated"] = rate
        before = cpu_seconds(peer.proc.pid)
        ok, _, (p50, p99) = h2load(peer.url(), proto, args.rate * args.rate_seconds, args.rate,
                                   log=log)
        row[f"{proto} CPU µs/request at {args.rate}/s"] = (cpu_seconds(peer.proc.pid) - before) / ok * 1e6
        row[f"{proto} p50 ms at {args.rate}/s"] = p50
        row[f"{proto} p99 ms at {args.rate}/s"] = p99
        calls, sends = syscalls(peer, proto, 5000)
        row[f"{proto} syscalls/request"] = calls
        row[f"{proto} send calls/request"] = sends
        row[f"{proto} TLS records/response"] = records_per_response(peer, proto)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--edge", action="append", help="edge binary (repeat to compare several)")
    ap.add_argument("--peers", default="nginx,haproxy,caddy")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rate", type=int, default=1000, help="fixed offered rate, requests/s")
    ap.add_argument("--rate-seconds", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(ROOT, "benches/results/small_requests.md"))
    args = ap.parse_args()
    edges = args.edge or [os.path.join(ROOT, "target/release/registry-edge")]
    upstream_bin = os.path.join(ROOT, "target/release/examples/fast_upstream")
    work = tempfile.mkdtemp(prefix="small-requests-")
    certs = os.path.join(work, "certs")
    subprocess.run([edges[0], "gen-certs", "--dir", certs, "--host", "localhost"], check=True,
                   capture_output=True)
    upstream = free_port()
    up = subprocess.Popen(["taskset", "-c", "0", upstream_bin, f"127.0.0.1:{upstream}", "512"])
    peers = [Edge(b, work, certs, upstream) for b in edges]
    kinds = {"nginx": Nginx, "haproxy": Haproxy, "caddy": Caddy}
    for name in filter(None, args.peers.split(",")):
        if shutil.which(name):
            peers.append(kinds[name](name, work, certs, upstream))
        else:
            print(f"{name} is not installed: skipped", file=sys.stderr)
    results = {}
    try:
        for rep in range(args.reps):
            for peer in peers:
                peer.start()
                try:
                    row = measure(peer, args)
                finally:
                    peer.stop()
                for key, value in row.items():
                    results.setdefault(key, {}).setdefault(peer.name, []).append(value)
                print(rep, peer.name, {k: round(v, 1) for k, v in row.items()}, flush=True)
    finally:
        up.terminate()
    names = [p.name for p in peers]
    # Ratios are of the last edge binary (the one under test) to every other peer.
    subject = len(edges) - 1
    others = [i for i in range(len(names)) if i != subject]

    def median(values):
        return sorted(values)[len(values) // 2]

    lines = [f"Small requests (512 B blob GET), proxy pinned to 1 CPU, 1 worker; medians of "
             f"{args.reps}; {time.strftime('%Y-%m-%d')}; ratios are {names[subject]} / peer "
             f"(for CPU, syscalls and latency lower is better)", "",
             "| measure | " + " | ".join(names) + " | " +
             " | ".join(f"/ {names[i]}" for i in others) + " |",
             "|---" * (1 + len(names) + len(others)) + "|"]
    for key, by_peer in results.items():
        values = [median(by_peer[n]) for n in names]
        ratios = [f"{values[subject] / values[i]:.2f}" if values[i] else "-" for i in others]
        lines.append(f"| {key} | " + " | ".join(f"{v:,.2f}" if v < 10 else f"{v:,.1f}" for v in values) + " | " +
                     " | ".join(ratios) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    open(args.out, "w").write(text)


if __name__ == "__main__":
    main()
