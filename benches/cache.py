#!/usr/bin/env python3
"""The edge's cache against nginx: hot pulls, small blobs and cold pulls, in one run.

    benches/cache.py [--reps 3] [--image-mib 1024] [--duration 5] [--quick]

Starts on 127.0.0.1 ephemeral ports: the real registry with token auth (data in /dev/shm),
registry-edge with `cache:` (entries on /var/tmp, a real disk), registry-edge without it,
nginx with the docs' config plus GitLab's unbuffered switches in front of the same
registry, and nginx serving the small blob as a static file (the practical ceiling). Every
measurement alternates the contenders for --reps rounds and reports medians; ratios come
from the same run. Writes benches/results/cache.md and prints it. Reuses compare_nginx.py's
harness (processes, nginx config, wrk, downloads).
"""

import argparse
import concurrent.futures
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_nginx as cn  # noqa: E402

SMALL = 4096  # bytes: the small blob
C4_MIB = 256  # the blob four clients pull cold at once (C4)


def static_nginx(b, digest, path):
    """nginx answering GET /v2/bench/small/blobs/<digest> from a file: the ceiling."""
    port = cn.free_port()
    d = os.path.join(b.disk, f"static-{port}")
    os.makedirs(d)
    # nginx's workers run as nobody: the file goes where they can read it.
    served = os.path.join(d, "blob")
    shutil.copyfile(path, served)
    os.chmod(d, 0o755)
    os.chmod(served, 0o644)
    path = served
    conf = os.path.join(b.work, f"static-{port}.conf")
    with open(conf, "w") as f:
        f.write(f"""
daemon off;
worker_processes {b.args.threads};
pid {d}/nginx.pid;
error_log {b.work}/static-{port}-error.log warn;
events {{ worker_connections 4096; }}
http {{
 access_log {b.work}/static-{port}-access.log;
 keepalive_requests 1000000;
 client_body_temp_path {d}/client_body; proxy_temp_path {d}/proxy;
 fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
 server {{
  listen 127.0.0.1:{port} ssl http2;
  ssl_certificate {b.work}/certs/tls.crt;
  ssl_certificate_key {b.work}/certs/tls.key;
  location = /v2/{cn.SMALL_REPO}/blobs/{digest} {{
   default_type application/octet-stream;
   alias {path};
  }}
 }}
}}
""")
    p = b.start(f"static-{port}", ["nginx", "-c", conf, "-e", "stderr"])
    cn.wait_ready(f"https://127.0.0.1:{port}/v2/{cn.SMALL_REPO}/blobs/{digest}", b.ca,
                  codes=("200",))
    return p, port


def wait_cached(cache_dir, size, deadline_s=60):
    """Polls until the cache folder holds `size` bytes of content (a fill commits just
    after the body it copies has been sent)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        held = 0
        for root, _, files in os.walk(os.path.join(cache_dir, "content-v2")):
            held += sum(os.path.getsize(os.path.join(root, f)) for f in files)
        if held >= size:
            return
        time.sleep(0.1)
    raise RuntimeError(f"the cache did not fill within {deadline_s} s")


def purge(config):
    subprocess.run([cn.EDGE, "cache", "purge", "--config", config], check=True,
                   capture_output=True)


def parallel_downloads(b, base, digest, size, count, token):
    """`count` downloads of one blob at once; aggregate MB/s."""
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        jobs = [pool.submit(download, b, base, digest, size, token) for _ in range(count)]
        for j in jobs:
            j.result()
    return count * size / 1e6 / (time.monotonic() - start)


def timed_download(b, base, digest, size, token):
    """Seconds one download takes."""
    return size / 1e6 / download(b, base, digest, size, token)


def with_a_slow_client(b, base, digest, size, token):
    """Seconds each of three downloads takes, started just after a fourth limited to
    2 MB/s began (killed once the three are done)."""
    url = f"{base}/v2/{cn.REPO}/blobs/{digest}"
    slow = subprocess.Popen(["curl", "-sS", "--http1.1", "--cacert", b.ca, "--limit-rate", "2M",
                             "-H", f"Authorization: Bearer {token}", "-o", "/dev/null", url])
    try:
        # The slow client leads: the others ask once it is being answered.
        deadline = time.monotonic() + 10
        while not slow_started(slow) and time.monotonic() < deadline:
            time.sleep(0.01)
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            jobs = [pool.submit(timed_download, b, base, digest, size, token)
                    for _ in range(3)]
            return [j.result() for j in jobs]
    finally:
        slow.kill()
        slow.wait()


def slow_started(proc):
    """Whether `proc` (curl) has read part of its answer: its read bytes in /proc."""
    try:
        with open(f"/proc/{proc.pid}/io") as f:
            fields = dict(line.split(": ") for line in f.read().splitlines())
        return int(fields["rchar"]) > 64 * 1024
    except (OSError, KeyError, ValueError):
        return False


def download(b, base, digest, size, token):
    out = b.curl("-H", f"Authorization: Bearer {token}", "-o", "/dev/null", "-w",
                 "%{size_download} %{time_total}", f"{base}/v2/{cn.REPO}/blobs/{digest}")
    got, secs = out.split()
    if int(got) != size:
        raise RuntimeError(f"downloaded {got} of {size} bytes from {base}")
    return size / 1e6 / float(secs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--duration", type=int, default=5, help="seconds per small-request run")
    ap.add_argument("--image-mib", type=int, default=1024)
    ap.add_argument("--quick", action="store_true", help="256 MiB, 1 rep, 2 s runs")
    ap.add_argument("--out", default=os.path.join(cn.ROOT, "benches/results/cache.md"))
    ap.add_argument("--skip-setup", action="store_true", help="do not apt-get or cargo build")
    ap.add_argument("--only", default="C1,C2,C3,C4", help="the scenarios to run (C1,C2,C3,C4)")
    args = ap.parse_args()
    only = set(args.only.split(","))
    if not args.skip_setup:
        cn.ensure_tools()
        cn.build()
    if args.quick:
        args.reps, args.duration, args.image_mib = 1, 2, 256
    # What compare_nginx's harness reads.
    args.big_mib, args.concurrent_mib, args.cold_users = args.image_mib, 1, 1
    b = cn.Bench(args)
    table = cn.Table()
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        reg, reg_port = b.registry(auth=True)
        cache_dir = tempfile.mkdtemp(prefix="registry-edge-cache.", dir="/var/tmp")
        cached, cached_port = b.edge(reg_port, args.threads, auth=True, extra=(
            f"cache: {{ dir: {cache_dir}, max_size: {2 * args.image_mib + 64}MiB, "
            "memory: 64MiB }\n"))
        cached_config = os.path.join(b.work, f"edge-{cached_port}.yaml")
        plain, plain_port = b.edge(reg_port, args.threads, auth=True)
        ngx, ngx_port = b.nginx(reg_port, args.threads, buffering=False)
        cached_base = f"https://127.0.0.1:{cached_port}"
        plain_base = f"https://127.0.0.1:{plain_port}"
        ngx_base = f"https://127.0.0.1:{ngx_port}"
        scope = f"repository:{cn.REPO}:pull,push"
        token = b.token(cached_base, "bench", "bench-pw", scope)
        small_token = b.token(cached_base, "bench", "bench-pw",
                              f"repository:{cn.SMALL_REPO}:pull,push")
        b.upload(plain_base, "big", cn.REPO, token)
        small_path = os.path.join(b.work, "small.blob")
        with open(small_path, "wb") as f:
            f.write(os.urandom(SMALL))
        small_digest = "sha256:" + cn.sh("sha256sum", small_path).split()[0]
        b.blobs["small"] = (small_path, small_digest)
        b.upload(plain_base, "small", cn.SMALL_REPO, small_token)
        static, static_port = static_nginx(b, small_digest, small_path)
        big_digest, size = b.blobs["big"][1], b.big

        if "C1" in only:
            cn.log("== cold pulls: cache edge (purged each round) vs the edge without a cache")
            rss = {"edge, cache": [], "edge, no cache": []}

            def cold(name, base, r):
                proc = cached if name == "edge, cache" else plain
                if proc is cached:
                    purge(cached_config)
                cn.reset_peak_rss(proc.pids())
                rate = download(b, base, big_digest, size, token)
                rss[name].append(sum(cn.proc_status(p, "VmHWM") for p in proc.pids()) / cn.MIB)
                return rate

            res = cn.alternate(args.reps, [("edge, cache", cached_base),
                                           ("edge, no cache", plain_base)], cold)
            table.add(f"C1. cold pull of a {args.image_mib} MiB blob (filling the cache) vs "
                      "the edge without a cache", "MB/s", cn.median(res["edge, cache"]),
                      cn.median(res["edge, no cache"]))
            table.add("C1. peak RSS during the cold pull", "MiB", max(rss["edge, cache"]),
                      max(rss["edge, no cache"]), better="lower")

        if "C4" in only:
            cn.log("== 4 cold pulls of one blob at once, one client at 2 MB/s, vs one alone")
            c4_path = os.path.join(b.work, "c4.blob")
            with open(c4_path, "wb") as f:
                for _ in range(C4_MIB):
                    f.write(os.urandom(cn.MIB))
            c4_digest = "sha256:" + cn.sh("sha256sum", c4_path).split()[0]
            b.blobs["c4"] = (c4_path, c4_digest)
            b.upload(plain_base, "c4", cn.REPO, token)
            alone, three = [], []
            for _ in range(args.reps):
                purge(cached_config)
                alone.append(timed_download(b, cached_base, c4_digest, C4_MIB * cn.MIB, token))
                purge(cached_config)
                three.append(max(with_a_slow_client(b, cached_base, c4_digest, C4_MIB * cn.MIB,
                                                    token)))
            table.add(f"C4. 4 cold pulls of one {C4_MIB} MiB blob, one at 2 MB/s: the slowest "
                      "of the other three vs one cold pull alone", "s", cn.median(three),
                      cn.median(alone), better="lower")

        if "C2" in only:
            cn.log("== 8 concurrent pulls of the same blob, warm cache, vs nginx -> registry")
            download(b, cached_base, big_digest, size, token)
            wait_cached(cache_dir, size)
            res = cn.alternate(args.reps, [("edge", cached_base), ("nginx", ngx_base)],
                               lambda n, base, r: parallel_downloads(b, base, big_digest, size,
                                                                     8, token))
            table.add(f"C2. 8 concurrent pulls of one {args.image_mib} MiB blob, warm cache",
                      "MB/s", cn.median(res["edge"]), cn.median(res["nginx"]))

        if "C3" in only:
            cn.log("== 4 KiB blob by digest, 64 connections, warm cache")
            bearer = (f"Authorization: Bearer {small_token}",)
            path = f"/v2/{cn.SMALL_REPO}/blobs/{small_digest}"
            download_small = [("edge", cached_base), ("nginx", ngx_base),
                              ("static", f"https://127.0.0.1:{static_port}")]
            for proto, tool in (("h1", b.wrk), ("h2", b.h2load)):
                res = cn.alternate(args.reps, download_small,
                                   lambda n, base, r: tool(base + path, bearer))
                rates = {n: cn.median([x["rps"] for x in res[n]]) for n, _ in download_small}
                table.add(f"C3. GET 4 KiB blob, {proto}, vs nginx -> registry", "req/s",
                          rates["edge"], rates["nginx"])
                table.add(f"C3. GET 4 KiB blob, {proto}, vs nginx serving the file", "req/s",
                          rates["edge"], rates["static"])
        b.stop(static, cached, plain, ngx, reg)
    finally:
        b.cleanup()

    header = (
        f"Measured {started:%Y-%m-%d} with `benches/cache.py"
        f"{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}` on {os.cpu_count()} cores "
        f"({cn.platform_line()}); medians of {args.reps} alternating runs, {args.threads} "
        "worker threads each. The \"nginx\" column is the contender named in each row: nginx "
        "(docs' config, unbuffered) in front of the same registry, the edge without a cache, "
        "or nginx serving the blob as a static file."
    )
    md = table.markdown(header)
    with open(args.out, "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
