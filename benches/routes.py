#!/usr/bin/env python3
"""A mirror route against the mirror itself: warm pulls, small GETs by digest, stale lookups.

    benches/routes.py [--reps 3] [--image-mib 256] [--duration 5] [--quick]

Starts on 127.0.0.1 ephemeral ports: R, the real registry without auth (the "public"
registry), M, the real registry in proxy mode (`proxy.remoteurl` = R) with token auth
trusting the edge's key, and registry-edge with `cache:` and two routes to M: `bench/hub/`
with `stale_if_error` and `bench/plain/` without it. Measures, alternating the contenders
for --reps rounds (medians, ratios from the same run):

- R1: 8 concurrent warm pulls of the image's big blob through the route (the edge's cache)
  vs directly from M (plain HTTP on loopback, from its own storage), and vs nginx (TLS,
  the docs' config, unbuffered) in front of M, as M would be served to clients;
- R2: GET of a 4 KiB blob by digest through the route vs directly from M (wrk, h1, 64
  connections; the edge over TLS, M in plain HTTP), and vs nginx in front of M;
- R3: GET of a manifest by tag through the route with `stale_if_error` vs the route
  without it (both reach M each time): what remembering the tag costs per request.

Writes benches/results/routes.md and prints it. Reuses compare_nginx.py's harness.
"""

import argparse
import concurrent.futures
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_nginx as cn  # noqa: E402

SMALL = 4096
PULLS = 8
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def put_manifest(b, base, repo, tag, config, layer):
    """Tags `repo:tag` in the registry at `base` (no auth): an OCI manifest of two blobs."""
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": config[0], "size": config[1]},
        "layers": [{"mediaType": LAYER_TYPE, "digest": layer[0], "size": layer[1]}],
    })
    path = os.path.join(b.work, "manifest.json")
    with open(path, "w") as f:
        f.write(manifest)
    code = b.curl("-X", "PUT", "-H", f"Content-Type: {MANIFEST_TYPE}", "--data-binary",
                  f"@{path}", "-o", "/dev/null", "-w", "%{http_code}",
                  f"{base}/v2/{repo}/manifests/{tag}")
    if code != "201":
        raise RuntimeError(f"manifest PUT to {base} ended with {code}")


def download(b, url, size, token):
    out = b.curl("-H", f"Authorization: Bearer {token}", "-o", "/dev/null", "-w",
                 "%{size_download} %{time_total}", url)
    got, secs = out.split()
    if int(got) != size:
        raise RuntimeError(f"downloaded {got} of {size} bytes from {url}")
    return float(secs)


def parallel(b, url, size, token):
    """PULLS downloads of one blob at once; aggregate MB/s."""
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(PULLS) as pool:
        for job in [pool.submit(download, b, url, size, token) for _ in range(PULLS)]:
            job.result()
    return PULLS * size / 1e6 / (time.monotonic() - start)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--duration", type=int, default=5, help="seconds per small-request run")
    ap.add_argument("--image-mib", type=int, default=256)
    ap.add_argument("--quick", action="store_true", help="64 MiB, 1 rep, 2 s runs")
    ap.add_argument("--out", default=os.path.join(cn.ROOT, "benches/results/routes.md"))
    ap.add_argument("--skip-setup", action="store_true", help="do not apt-get or cargo build")
    args = ap.parse_args()
    if not args.skip_setup:
        cn.ensure_tools()
        cn.build()
    if args.quick:
        args.reps, args.duration, args.image_mib = 1, 2, 64
    args.big_mib, args.concurrent_mib, args.cold_users = args.image_mib, 1, 1
    b = cn.Bench(args)
    table = cn.Table()
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        public, public_port = b.registry(auth=False)
        mirror, mirror_port = b.registry(
            auth=True, extra=f"proxy: {{ remoteurl: http://127.0.0.1:{public_port} }}\n")
        cache_dir = tempfile.mkdtemp(prefix="registry-edge-cache.", dir="/var/tmp")
        routes = "".join(
            f"  - {{ name: {name}, prefix: bench/{name}/, nodes: [\"127.0.0.1:{mirror_port}\"], "
            f"read_only: true{stale} }}\n"
            for name, stale in (("hub", ", stale_if_error: 24h"), ("plain", "")))
        edge, edge_port = b.edge(public_port, args.threads, auth=True, extra=(
            f"cache: {{ dir: {cache_dir}, max_size: {args.image_mib + 64}MiB, "
            "memory: 64MiB }\n" + "routes:\n" + routes))
        ngx, ngx_port = b.nginx(mirror_port, args.threads, buffering=False)
        edge_base = f"https://127.0.0.1:{edge_port}"
        public_base = f"http://127.0.0.1:{public_port}"
        mirror_base = f"http://127.0.0.1:{mirror_port}"

        # R holds bench/app:1 (the big blob as its layer, the small one as its config).
        b.upload(public_base, "big", cn.REPO)
        small_path = os.path.join(b.work, "small.blob")
        with open(small_path, "wb") as f:
            f.write(os.urandom(SMALL))
        small_digest = "sha256:" + cn.sh("sha256sum", small_path).split()[0]
        b.blobs["small"] = (small_path, small_digest)
        b.upload(public_base, "small", cn.REPO)
        big_digest, size = b.blobs["big"][1], b.big
        put_manifest(b, public_base, cn.REPO, "1", (small_digest, SMALL), (big_digest, size))

        # Tokens for the edge's names, and (from the same realm) for M's own names.
        edge_token = b.token(edge_base, "bench", "bench-pw", f"repository:bench/hub/{cn.REPO}:pull")
        plain_token = b.token(edge_base, "bench", "bench-pw",
                              f"repository:bench/plain/{cn.REPO}:pull")
        mirror_token = b.token(edge_base, "bench", "bench-pw", f"repository:{cn.REPO}:pull")
        routed = f"{edge_base}/v2/bench/hub/{cn.REPO}"
        direct = f"{mirror_base}/v2/{cn.REPO}"
        fronted = f"https://127.0.0.1:{ngx_port}/v2/{cn.REPO}"
        # Warm both: M fetches from R once, the edge fills its cache from M once.
        for url, token in ((direct, mirror_token), (routed, edge_token)):
            download(b, f"{url}/blobs/{big_digest}", size, token)
            download(b, f"{url}/blobs/{small_digest}", SMALL, token)

        cn.log(f"== R1: {PULLS} concurrent warm pulls of {args.image_mib} MiB")
        res = cn.alternate(args.reps, [("route", routed), ("M", direct), ("nginx", fronted)],
                           lambda n, url, r: parallel(b, f"{url}/blobs/{big_digest}", size,
                                                      edge_token if n == "route" else
                                                      mirror_token))
        table.add(f"R1. {PULLS} concurrent warm pulls of a {args.image_mib} MiB blob: the "
                  "route (edge cache) vs directly from M", "MB/s", cn.median(res["route"]),
                  cn.median(res["M"]))
        table.add(f"R1. {PULLS} concurrent warm pulls of a {args.image_mib} MiB blob: the "
                  "route vs nginx (TLS) in front of M", "MB/s", cn.median(res["route"]),
                  cn.median(res["nginx"]))

        cn.log("== R2: 4 KiB blob by digest, 64 connections")
        res = cn.alternate(args.reps, [("route", routed), ("M", direct), ("nginx", fronted)],
                           lambda n, url, r: b.wrk(
                               f"{url}/blobs/{small_digest}",
                               (f"Authorization: Bearer "
                                f"{edge_token if n == 'route' else mirror_token}",)))
        table.add("R2. GET 4 KiB blob by digest, h1: the route vs directly from M", "req/s",
                  cn.median([x["rps"] for x in res["route"]]),
                  cn.median([x["rps"] for x in res["M"]]))
        table.add("R2. GET 4 KiB blob by digest, h1: the route vs nginx (TLS) in front of M",
                  "req/s", cn.median([x["rps"] for x in res["route"]]),
                  cn.median([x["rps"] for x in res["nginx"]]))

        cn.log("== R3: manifest by tag through a route with stale_if_error vs without")
        accept = f"Accept: {MANIFEST_TYPE}"
        res = cn.alternate(args.reps, [
            ("stale_if_error", (routed, edge_token)),
            ("no stale_if_error", (f"{edge_base}/v2/bench/plain/{cn.REPO}", plain_token)),
        ], lambda n, target, r: b.wrk(f"{target[0]}/manifests/1",
                                      (f"Authorization: Bearer {target[1]}", accept)))
        with_stale = cn.median([x["rps"] for x in res["stale_if_error"]])
        without = cn.median([x["rps"] for x in res["no stale_if_error"]])
        table.add("R3. GET manifest by tag, h1: route with stale_if_error vs without "
                  "(both reach M)", "req/s", with_stale, without)
        b.stop(ngx, edge, mirror, public)
    finally:
        b.cleanup()

    header = (
        f"Measured {started:%Y-%m-%d} with `benches/routes.py"
        f"{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}` on {os.cpu_count()} cores "
        f"({cn.platform_line()}); medians of {args.reps} alternating runs, {args.threads} "
        "edge worker threads, clients on the same 2 cores. The \"nginx\" column is the "
        "contender named in each row: M, a distribution in proxy mode asked directly over "
        "plain HTTP (no TLS for its clients to decrypt), nginx with TLS in front of M, or the "
        "same route without stale_if_error. R3 is bound by M (each by-tag GET makes M ask R "
        "for the tag); the edge's own cost of remembering a tag is timed in "
        "benches/hot_paths.rs (`stale_if_error: remember a tag seen again`)."
    )
    md = table.markdown(header)
    with open(args.out, "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
