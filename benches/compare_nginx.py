#!/usr/bin/env python3
"""registry-edge against nginx: the same job, the same upstream, the same run.

    benches/compare_nginx.py [--reps 3] [--threads 2] [--quick] [--scenarios 1,2,3,4,5,6]

Starts, all on 127.0.0.1 ephemeral ports: a registry node (Debian's docker-registry, data
in /dev/shm), a minimal fast upstream (examples/fast_upstream.rs) to isolate the proxies
from the registry's own speed, registry-edge, and nginx with the docs' config plus
GitLab's `proxy_request_buffering off` / `proxy_buffering off` ("nginx"), and nginx with
its default buffering ("nginx-buf"). Each proxy gets the same number of worker threads
(--threads, plus a 1-thread per-core pass for the small-request scenarios). Every
measurement alternates the proxies A/B/A/B for --reps rounds and reports medians.

Then the pinned small-request pass against nginx, HAProxy and Caddy (benches/small_requests.py;
skip with --no-peers) and the cache pass (benches/cache.py; skip with --no-cache). Writes a
Markdown table to benches/results/latest.md and prints it.
Needs root for apt-get when tools are missing (nginx-light, wrk, nghttp2-client, ...).
"""

import argparse
import base64
import concurrent.futures
import datetime
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EDGE = os.path.join(ROOT, "target/release/registry-edge")
FAST = os.path.join(ROOT, "target/release/examples/fast_upstream")
MIB = 1024 * 1024
SERVICE = "container_registry"
ISSUER = "registry-edge-bench"
REPO = "bench/app"  # holds the big blob
SMALL_REPO = "bench/small"  # holds the small one; the fast upstream keys on "/small"
SMALL_BLOB = 512  # bytes: scenario 4's blob


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw).stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_tools():
    wanted = {
        "nginx": "nginx-light",
        "wrk": "wrk",
        "h2load": "nghttp2-client",
        "docker-registry": "docker-registry",
        "curl": "curl",
        "cmake": "cmake",
        "haproxy": "haproxy",
        "caddy": "caddy",
        "strace": "strace",
    }
    missing = sorted({pkg for tool, pkg in wanted.items() if not shutil.which(tool)})
    if missing:
        log("installing", " ".join(missing))
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(sudo + ["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(sudo + ["apt-get", "install", "-y", "-q"] + missing, check=True, env=env)
    # nginx-light's package starts a system nginx on :80; it is not ours to keep running.
    subprocess.run(["service", "nginx", "stop"], capture_output=True)


def build():
    log("building registry-edge and the fast upstream (release)")
    subprocess.run(
        ["cargo", "build", "--release", "--bin", "registry-edge", "--example", "fast_upstream"],
        cwd=ROOT,
        check=True,
    )


class Process:
    """A child process started in its own process group and stopped with it."""

    def __init__(self, name, cmd, work, env=None):
        self.name = name
        self.log_path = os.path.join(work, f"{name}.log")
        with open(self.log_path, "w") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    @property
    def pid(self):
        return self.proc.pid

    def pids(self):
        """The process and its children (nginx workers)."""
        kids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    if int(fields[1]) == self.pid:
                        kids.append(int(entry))
                except (OSError, IndexError):
                    pass
        return [self.pid] + kids

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait()


def wait_ready(url, ca, codes=("200", "401"), deadline_s=30):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        r = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", ca, url],
            capture_output=True,
            text=True,
        )
        if r.stdout in codes:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {deadline_s}s")


def proc_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def proc_io(pid, key):
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def reset_peak_rss(pids):
    for pid in pids:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS


class Bench:
    def __init__(self, args):
        self.args = args
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.work = tempfile.mkdtemp(prefix="registry-edge-compare.", dir=base)
        # nginx's body and proxy temp files go to a real disk, so write_bytes counts them.
        self.disk = tempfile.mkdtemp(prefix="registry-edge-compare-disk.", dir="/var/tmp")
        os.chmod(self.disk, 0o755)  # nginx workers run as nobody when started by root
        self.procs = []
        self.rates = {}  # (scenario, protocol, label) -> medians, for derived rows
        self.ca = os.path.join(self.work, "certs/tls.crt")
        sh(EDGE, "gen-certs", "--dir", os.path.join(self.work, "certs"), "--host", "localhost")
        self.big = args.big_mib * MIB
        self.conc = args.concurrent_mib * MIB
        self.blobs = {}
        for name, size in (("big", self.big), ("conc", self.conc)):
            path = os.path.join(self.work, f"{name}.blob")
            with open(path, "wb") as f:
                left = size
                while left:
                    n = min(left, 8 * MIB)
                    f.write(os.urandom(n))
                    left -= n
            self.blobs[name] = (path, "sha256:" + sh("sha256sum", path).split()[0])
        self.users = self.write_users()

    def cleanup(self):
        for p in reversed(self.procs):
            p.stop()
        shutil.rmtree(self.work, ignore_errors=True)
        shutil.rmtree(self.disk, ignore_errors=True)

    def start(self, name, cmd, env=None):
        p = Process(name, cmd, self.work, env)
        self.procs.append(p)
        return p

    def stop(self, *procs):
        for p in procs:
            p.stop()
            self.procs.remove(p)

    # ---- upstreams -------------------------------------------------------------------

    def registry(self, auth, extra=""):
        """The real registry on a free port (`extra`: more top-level YAML, e.g. `proxy:`)."""
        port = free_port()
        data = os.path.join(self.work, f"data-{port}")
        conf = os.path.join(self.work, f"registry-{port}.yml")
        auth_block = ""
        if auth:
            auth_block = (
                "auth:\n  token:\n    realm: https://127.0.0.1:1/jwt/auth\n"
                f"    service: {SERVICE}\n    issuer: {ISSUER}\n"
                f"    rootcertbundle: {self.work}/certs/registry-auth.crt\n"
            )
        with open(conf, "w") as f:
            f.write(
                "version: 0.1\nlog: { level: error, accesslog: { disabled: true } }\n"
                f"storage: {{ filesystem: {{ rootdirectory: {data} }} }}\n"
                f"http: {{ addr: 127.0.0.1:{port}, secret: bench }}\n" + auth_block + extra
            )
        p = self.start(f"registry-{port}", ["/usr/bin/docker-registry", "serve", conf])
        wait_ready(f"http://127.0.0.1:{port}/v2/", self.ca)
        return p, port

    def fast_upstream(self):
        port = free_port()
        p = self.start(f"fast-{port}", [FAST, f"127.0.0.1:{port}", str(self.big)])
        wait_ready(f"http://127.0.0.1:{port}/v2/", self.ca)
        return p, port

    # ---- proxies ---------------------------------------------------------------------

    def edge(self, upstream_port, threads, auth, extra=""):
        port = free_port()
        conf = os.path.join(self.work, f"edge-{port}.yaml")
        auth_yaml = ""
        if auth:
            auth_yaml = (
                "auth:\n  token:\n"
                f"    service: {SERVICE}\n    issuer: {ISSUER}\n"
                "    signing_key: certs/registry-auth.key\n"
                "    certificate: certs/registry-auth.crt\n"
                "  users:\n    htpasswd: htpasswd\n"
                "  acl:\n    - { account: \"*\", name: \"bench/**\", actions: [pull, push] }\n"
            )
        with open(conf, "w") as f:
            f.write(
                f"server: {{ https_listen: [\"127.0.0.1:{port}\"], http_listen: [], "
                f"threads: {threads}, shutdown_grace: 1s }}\n"
                "tls: { certificates: [ { cert: certs/tls.crt, key: certs/tls.key } ] }\n"
                f"upstream: {{ nodes: [\"127.0.0.1:{upstream_port}\"], read_timeout: 900s, "
                "health_check: { interval: 1s } }\n" + auth_yaml + extra
            )
        env = dict(os.environ, REGISTRY_EDGE_LOG="info")
        p = self.start(f"edge-{port}", [EDGE, "run", "--config", conf], env)
        # 200/401 are proxied answers: until its first health check the edge says 503.
        wait_ready(f"https://127.0.0.1:{port}/v2/", self.ca)
        return p, port

    def nginx(self, upstream_port, threads, buffering):
        port = free_port()
        d = os.path.join(self.disk, f"nginx-{port}")
        os.makedirs(d)
        conf = os.path.join(self.work, f"nginx-{port}.conf")
        # The distribution docs' nginx recipe, with GitLab Omnibus's buffering switches
        # unless `buffering`; HTTP/1.1 upstream so chunked bodies can stream at all.
        unbuffered = "" if buffering else "proxy_request_buffering off;\n proxy_buffering off;\n"
        with open(conf, "w") as f:
            f.write(f"""
daemon off;
worker_processes {threads};
pid {d}/nginx.pid;
error_log {self.work}/nginx-{port}-error.log warn;
events {{ worker_connections 4096; }}
http {{
 access_log {self.work}/nginx-{port}-access.log;
 # nginx closes a connection after 1000 requests by default, and h2load does not
 # reconnect: without this its h2 runs would stop early.
 keepalive_requests 1000000;
 client_body_temp_path {d}/client_body;
 proxy_temp_path {d}/proxy;
 fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
 upstream docker-registry {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
 map $upstream_http_docker_distribution_api_version $docker_distribution_api_version {{
  '' 'registry/2.0';
 }}
 server {{
  listen 127.0.0.1:{port} ssl http2;
  ssl_certificate {self.work}/certs/tls.crt;
  ssl_certificate_key {self.work}/certs/tls.key;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_cache shared:SSL:10m;
  client_max_body_size 0;
  chunked_transfer_encoding on;
  location /v2/ {{
   add_header 'Docker-Distribution-Api-Version' $docker_distribution_api_version always;
   proxy_pass http://docker-registry;
   proxy_http_version 1.1;
   proxy_set_header Connection "";
   proxy_set_header Host $http_host;
   proxy_set_header X-Real-IP $remote_addr;
   proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
   proxy_set_header X-Forwarded-Proto $scheme;
   proxy_read_timeout 900;
   {unbuffered}
  }}
 }}
}}
""")
        p = self.start(f"nginx-{port}", ["nginx", "-c", conf, "-e", "stderr"])
        wait_ready(f"https://127.0.0.1:{port}/v2/", self.ca)
        return p, port

    # ---- clients ---------------------------------------------------------------------

    def curl(self, *args):
        return subprocess.run(
            ["curl", "-sS", "--http1.1", "--cacert", self.ca, *args],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def location(self, base, headers):
        for line in headers.splitlines():
            if line.lower().startswith("location:"):
                return urllib.parse.urljoin(base, line.split(":", 1)[1].strip())
        raise RuntimeError("no Location in:\n" + headers)

    def upload(self, base, blob, repo, token=None):
        path, digest = self.blobs[blob]
        auth = ["-H", f"Authorization: Bearer {token}"] if token else []
        loc = self.location(base, self.curl(*auth, "-X", "POST", "-D", "-", "-o", "/dev/null",
                                            f"{base}/v2/{repo}/blobs/uploads/"))
        loc = self.location(base, self.curl(
            *auth, "-X", "PATCH", "-T", path, "-H", "Transfer-Encoding: chunked",
            "-H", "Content-Type: application/octet-stream", "-D", "-", "-o", "/dev/null", loc))
        sep = "&" if "?" in loc else "?"
        code = self.curl(*auth, "-X", "PUT", "-o", "/dev/null", "-w", "%{http_code}",
                         f"{loc}{sep}digest={urllib.parse.quote(digest)}")
        if code != "201":
            raise RuntimeError(f"upload to {base} ended with {code}")

    def timed_uploads(self, base, blob, count, round_label):
        size = self.big if blob == "big" else self.conc
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            jobs = [pool.submit(self.upload, base, blob, f"bench/{round_label}-{i}")
                    for i in range(count)]
            for j in jobs:
                j.result()
        return count * size / 1e6 / (time.monotonic() - start)

    def download(self, base, repo, digest, size):
        out = self.curl("-o", "/dev/null", "-w", "%{size_download} %{time_total}",
                        f"{base}/v2/{repo}/blobs/{digest}")
        got, secs = out.split()
        if int(got) != size:
            raise RuntimeError(f"downloaded {got} of {size} bytes from {base}")
        return size / 1e6 / float(secs)

    def wrk(self, url, headers=(), conns=64, script=None):
        cmd = ["wrk", "-t", "2", "-c", str(conns), "-d", f"{self.args.duration}s", "--latency"]
        for h in headers:
            cmd += ["-H", h]
        if script:
            cmd += ["-s", script]
        warm_up = [c if c != f"{self.args.duration}s" else "1s" for c in cmd]
        subprocess.run(warm_up + [url], capture_output=True)
        out = sh(*cmd, url)
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if non2xx:
            raise RuntimeError(f"wrk saw {non2xx.group(1)} error responses from {url}\n{out}")
        lat = dict(re.findall(r"\s+(\d+)%\s+([\d.]+\w+)", out))
        return {"rps": rps, "p50": to_ms(lat["50"]), "p99": to_ms(lat["99"])}

    def h2load(self, url, headers=(), conns=64):
        log_file = os.path.join(self.work, "h2load.tsv")
        hdr = sum((["-H", h] for h in headers), [])
        base = ["h2load", "-t", "2", "-c", str(conns), "-m", "1"] + hdr
        subprocess.run(base + ["-D", "1", url], capture_output=True)  # warm-up
        if os.path.exists(log_file):
            os.remove(log_file)  # h2load appends to it
        out = sh(*base, "-D", str(self.args.duration), "--log-file", log_file, url)
        m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
        if not m or m.group(1) != m.group(2):
            raise RuntimeError(f"h2load saw failed requests on {url}\n{out}")
        times, statuses = [], set()
        with open(log_file) as f:
            for line in f:
                _, status, micros = line.split("\t")[:3]
                statuses.add(status)
                times.append(int(micros) / 1000)
        if statuses - {"200"}:
            raise RuntimeError(f"h2load saw statuses {statuses} on {url}")
        times.sort()
        rps = float(re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out).group(1))
        return {"rps": rps, "p50": pct(times, 50), "p99": pct(times, 99)}

    def token(self, edge_base, user, password, scope):
        body = self.curl("-u", f"{user}:{password}",
                         f"{edge_base}/jwt/auth?service={SERVICE}&scope={scope}")
        return json.loads(body)["token"]

    def write_users(self):
        """One bench user with a known password, and many others for cold logins.
        They share one bcrypt hash (so the file is quick to make) but each is a
        separate account, so every first login misses the credential cache."""
        line = subprocess.run([EDGE, "hash-password", "--user", "bench"], input="bench-pw\n",
                              check=True, text=True, capture_output=True).stdout.strip()
        hashed = line.split(":", 1)[1]
        lines = [line] + [f"u{i}:{hashed}" for i in range(self.args.cold_users)]
        with open(os.path.join(self.work, "htpasswd"), "w") as f:
            f.write("\n".join(lines) + "\n")
        script = os.path.join(self.work, "cold.lua")
        with open(script, "w") as f:
            f.write(f"""
local counter = 0
local threads = 0
function setup(thread) thread:set("id", threads); threads = threads + 1 end
function init(args) counter = id * {self.args.cold_users // 2} end
function request()
  counter = counter + 1
  local creds = "u" .. (counter % {self.args.cold_users}) .. ":bench-pw"
  return wrk.format(nil, nil, {{ Authorization = "Basic " .. b64(creds) }})
end
local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
function b64(data)
  return ((data:gsub(".", function(x)
    local r, b = "", x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return chars:sub(c + 1, c + 1)
  end) .. ({{ "", "==", "=" }})[#data % 3 + 1])
end
""")
        self.cold_script = script
        return lines


def to_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def pct(sorted_values, p):
    i = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[i]


def median(values):
    return statistics.median(values)


class Table:
    def __init__(self):
        self.rows = []

    def add(self, scenario, unit, edge, nginx, nginx_buf=None, better="higher"):
        self.rows.append((scenario, unit, edge, nginx, nginx_buf, better))
        log(f"  {scenario} [{unit}]: edge {fmt(edge)} nginx {fmt(nginx)}"
            + (f" nginx-buf {fmt(nginx_buf)}" if nginx_buf is not None else ""))

    def markdown(self, header):
        out = [header, "",
               "| scenario | unit | edge | nginx | edge / nginx | nginx, default buffering |",
               "|---|---|---|---|---|---|"]
        for scenario, unit, edge, nginx, buf, better in self.rows:
            ratio = "" if not nginx or edge is None else f"{edge / nginx:.2f}"
            if ratio and better == "lower":
                ratio += " (lower is better)"
            out.append(f"| {scenario} | {unit} | {fmt(edge)} | {fmt(nginx)} | {ratio} | "
                       f"{fmt(buf) if buf is not None else ''} |")
        return "\n".join(out) + "\n"


def fmt(v):
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"


def alternate(reps, contenders, measure):
    """Runs measure(name, base) for each contender in turn, reps rounds; returns
    {name: [results...]} so every contender sees the same conditions on average."""
    results = {name: [] for name, _ in contenders}
    for r in range(reps):
        order = contenders if r % 2 == 0 else list(reversed(contenders))
        for name, base in order:
            results[name].append(measure(name, base, r))
    return results


def run_throughput(b, table, label, contenders, scenarios, repo_for_download, digest, size):
    reps = b.args.reps
    names = [n for n, _ in contenders]
    if 1 in scenarios:
        res = alternate(reps, contenders,
                        lambda n, base, r: b.timed_uploads(base, "big", 1, f"s1-{n}-{r}"))
        table.add(f"1. one {b.args.big_mib} MiB chunked upload, {label}", "MB/s",
                  *[median(res[n]) for n in names])
    if 2 in scenarios:
        peaks = {n: [] for n in names}
        disk = {n: [] for n in names}
        procs = dict(b.proxies)

        def measure(n, base, r):
            pids = procs[n].pids()
            reset_peak_rss(pids)
            written = sum(proc_io(p, "write_bytes") for p in pids)
            mbs = b.timed_uploads(base, "conc", 8, f"s2-{n}-{r}")
            peaks[n].append(sum(proc_status(p, "VmHWM") for p in pids) / MIB)
            disk[n].append((sum(proc_io(p, "write_bytes") for p in pids) - written) / MIB)
            return mbs

        res = alternate(reps, contenders, measure)
        table.add(f"2. 8 concurrent {b.args.concurrent_mib} MiB uploads, {label}", "MB/s",
                  *[median(res[n]) for n in names])
        table.add(f"2. peak RSS (VmHWM, all processes), {label}", "MiB",
                  *[max(peaks[n]) for n in names], better="lower")
        table.add(f"2. written to disk by the proxy, {label}", "MiB",
                  *[max(disk[n]) for n in names], better="lower")
    if 3 in scenarios:
        res = alternate(reps, contenders,
                        lambda n, base, r: b.download(base, repo_for_download, digest, size))
        table.add(f"3. {size // MIB} MiB blob download, {label}", "MB/s",
                  *[median(res[n]) for n in names])


def run_small(b, table, label, contenders, url_path, headers, scenario):
    reps = b.args.reps
    names = [n for n, _ in contenders]
    for proto, tool in (("h1", b.wrk), ("h2", b.h2load)):
        res = alternate(reps, contenders, lambda n, base, r: tool(base + url_path, headers))
        rates = [median([x["rps"] for x in res[n]]) for n in names]
        table.add(f"{scenario}, {proto}, {label}", "req/s", *rates)
        b.rates[(scenario[:1], proto, label)] = rates
        if scenario.startswith("5") and ("4", proto, label) in b.rates:
            # What the bearer token costs: a 1.5 KB header for both, a check for the edge.
            without = b.rates[("4", proto, label)]
            table.add(f"5 vs 4, {proto}: share of the scenario-4 rate kept, {label}", "%",
                      *[100 * w / wo for w, wo in zip(rates, without)])
        table.add(f"{scenario}, {proto} p50, {label}", "ms",
                  *[median([x["p50"] for x in res[n]]) for n in names], better="lower")
        table.add(f"{scenario}, {proto} p99, {label}", "ms",
                  *[median([x["p99"] for x in res[n]]) for n in names], better="lower")


def seed_registry(b, reg_port):
    """Puts the big blob and a small one into the registry directly (no proxy)."""
    direct = f"http://127.0.0.1:{reg_port}"
    b.upload(direct, "big", REPO)
    small = os.path.join(b.work, "small.blob")
    with open(small, "wb") as f:
        f.write(os.urandom(SMALL_BLOB))
    digest = "sha256:" + sh("sha256sum", small).split()[0]
    b.blobs["small"] = (small, digest)
    b.upload(direct, "small", SMALL_REPO)
    return b.blobs["big"][1], digest


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--duration", type=int, default=5, help="seconds per small-request run")
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--concurrent-mib", type=int, default=256)
    ap.add_argument("--cold-users", type=int, default=4000)
    ap.add_argument("--scenarios", default="1,2,3,4,5,6")
    ap.add_argument("--no-per-core", action="store_true", help="skip the 1-thread pass")
    ap.add_argument("--quick", action="store_true",
                    help="smaller sizes, 1 rep, 2 s runs: for trying the script, not for figures")
    ap.add_argument("--out", default=os.path.join(ROOT, "benches/results/latest.md"))
    ap.add_argument("--skip-setup", action="store_true", help="do not apt-get or cargo build")
    ap.add_argument("--no-peers", action="store_true",
                    help="skip the pinned small-request pass against nginx, HAProxy and Caddy")
    ap.add_argument("--no-cache", action="store_true",
                    help="skip the cache pass (benches/cache.py)")
    args = ap.parse_args()
    if args.quick:
        args.reps, args.duration, args.big_mib, args.concurrent_mib = 1, 2, 256, 64
    scenarios = {int(s) for s in args.scenarios.split(",")}
    if not args.skip_setup:
        ensure_tools()
        build()

    b = Bench(args)
    table = Table()
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        thread_counts = [args.threads] + ([] if args.no_per_core or args.threads == 1 else [1])
        for threads in thread_counts:
            per_core = threads != args.threads
            for upstream in ("registry", "fast"):
                label = f"{upstream} upstream, {threads} thread{'s' if threads > 1 else ''}"
                if upstream == "registry":
                    up, up_port = b.registry(auth=False)
                    big_digest, small_digest = seed_registry(b, up_port)
                else:
                    up, up_port = b.fast_upstream()
                    big_digest = small_digest = "sha256:" + "0" * 64
                edge, edge_port = b.edge(up_port, threads, auth=False)
                ngx, ngx_port = b.nginx(up_port, threads, buffering=False)
                started_here = [edge, ngx]
                contenders = [("edge", f"https://127.0.0.1:{edge_port}"),
                              ("nginx", f"https://127.0.0.1:{ngx_port}")]
                b.proxies = [("edge", edge), ("nginx", ngx)]
                if not per_core and scenarios & {1, 2, 3}:
                    buf, buf_port = b.nginx(up_port, threads, buffering=True)
                    started_here.append(buf)
                    contenders.append(("nginx-buf", f"https://127.0.0.1:{buf_port}"))
                    b.proxies.append(("nginx-buf", buf))
                    log(f"== {label}: throughput")
                    run_throughput(b, table, label, contenders, scenarios, REPO, big_digest,
                                   b.big)
                    contenders = contenders[:2]
                if 4 in scenarios:
                    log(f"== {label}: small requests")
                    run_small(b, table, label, contenders,
                              f"/v2/{SMALL_REPO}/blobs/{small_digest}", (),
                              f"4. GET {SMALL_BLOB} B blob")
                b.stop(*started_here)
                if 5 in scenarios:
                    log(f"== {label}: small requests with a bearer token")
                    reg_auth, reg_auth_port = (b.registry(auth=True) if upstream == "registry"
                                               else (None, up_port))
                    edge_a, edge_a_port = b.edge(reg_auth_port, threads, auth=True)
                    ngx_a, ngx_a_port = b.nginx(reg_auth_port, threads, buffering=False)
                    edge_base = f"https://127.0.0.1:{edge_a_port}"
                    token = b.token(edge_base, "bench", "bench-pw",
                                    f"repository:{SMALL_REPO}:pull,push")
                    if reg_auth:
                        b.upload(edge_base, "small", SMALL_REPO, token)
                    path = f"/v2/{SMALL_REPO}/blobs/{small_digest}"
                    run_small(b, table, label, [("edge", edge_base),
                                                ("nginx", f"https://127.0.0.1:{ngx_a_port}")],
                              path, (f"Authorization: Bearer {token}",),
                              f"5. GET {SMALL_BLOB} B blob with a bearer token")
                    if 6 in scenarios and upstream == "registry":
                        run_tokens(b, table, label, edge_base)
                    b.stop(edge_a, ngx_a)
                    if reg_auth:
                        b.stop(reg_auth)
                b.stop(up)
    finally:
        b.cleanup()

    cores = os.cpu_count()
    header = (
        f"Measured {started:%Y-%m-%d} with `benches/compare_nginx.py"
        f"{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}` on {cores} cores "
        f"({platform_line()}); medians of {args.reps} alternating runs.\n"
        "\"nginx\" is the docs' config plus `proxy_request_buffering off` and `proxy_buffering off`"
        " (GitLab Omnibus); \"nginx, default buffering\" is the docs' config as written.\n"
        "Upstreams: the real registry (docker-registry, data on /dev/shm) and "
        "examples/fast_upstream.rs (answers at once, discards uploads)."
    )
    md = table.markdown(header)
    if not args.no_peers:
        md += "\n" + small_requests_against_peers(args)
    if not args.no_cache:
        md += "\n" + cache_pass(args)
    with open(args.out, "w") as f:
        f.write(md)
    print(md)


def small_requests_against_peers(args):
    """The pinned small-request pass against nginx, HAProxy and Caddy
    (benches/small_requests.py, which also writes benches/results/small_requests.md)."""
    cmd = [sys.executable, os.path.join(ROOT, "benches", "small_requests.py"),
           "--edge", EDGE, "--reps", str(args.reps)]
    if args.quick:
        cmd += ["--requests", "4000", "--rate-seconds", "2"]
    log("== small requests, proxy pinned to one core, against nginx, HAProxy and Caddy")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(ROOT, "benches", "results", "small_requests.md")) as f:
        return f.read()


def cache_pass(args):
    """The cache against nginx and the uncached edge (benches/cache.py, which also writes
    benches/results/cache.md)."""
    out = os.path.join(ROOT, "benches", "results", "cache.md")
    cmd = [sys.executable, os.path.join(ROOT, "benches", "cache.py"), "--skip-setup",
           "--reps", str(args.reps), "--threads", str(args.threads), "--out", out]
    if args.quick:
        cmd.append("--quick")
    log("== the cache: hot pulls, small blobs and cold pulls")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
        return f.read()


def run_tokens(b, table, label, edge_base):
    reps = b.args.reps
    url = f"{edge_base}/jwt/auth?service={SERVICE}&scope=repository:{REPO}:pull"
    basic = "Authorization: Basic " + base64.b64encode(b"bench:bench-pw").decode()
    warm = [b.wrk(url, (basic,)) for _ in range(reps)]
    table.add(f"6. tokens, warm credential cache, {label}", "tokens/s",
              median([x["rps"] for x in warm]), None)
    cold = [b.wrk(url, (), conns=8, script=b.cold_script) for _ in range(reps)]
    table.add(f"6. tokens, a new user each time (bcrypt), {label}", "tokens/s",
              median([x["rps"] for x in cold]), None)


def platform_line():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
