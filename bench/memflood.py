#!/usr/bin/env python3
"""Negative-entry flood: how much memory unknown ids cost, what the cache's weigher says about
them, and how much of it comes back once they expire.

    cargo build --release --locked
    python3 bench/memflood.py [--bin target/release/ams-thumbnails] [--ids 50000] [--ttl 20s]

Starts the release binary pinned to CPU 0 (one worker thread, as bench/run's server half on two
cores), local source over ./samples, `cache.not_found_ttl` = TTL. Then:

1. a warm-up of 2,000 unknown ids (arenas, connection buffers and code paged in), left to
   expire, and a `/metrics` scrape (which runs moka's pending maintenance);
2. baseline VmRSS;
3. IDS unknown ids `GET /assets/unknown-NNNNNNN/thumbnails` (404 each: a negative entry), over
   4 keep-alive connections;
4. `/metrics` (`cache_entries`, `cache_bytes` = moka's weighted size), VmRSS and VmHWM;
5. a wait past TTL, then `/metrics` again (expired entries are evicted by that maintenance) and
   VmRSS after 2 s more: what was handed back.

Prints one JSON line per round with the figures. The service's allocator is whatever the binary
was built with; `--env K=V` passes environment variables to it (e.g. MALLOC_ARENA_MAX=2,
_RJEM_MALLOC_CONF=..., MIMALLOC_PURGE_DELAY=0). Other options: `--rounds N` (fresh ids each
round, each left to expire), `--settle S` (seconds after expiry before the last look),
`--hook CMD` (run after expiry, `{pid}` replaced: e.g. gdb calling malloc_trim),
`--max-bytes B` (`cache.max_bytes`), and `--found N`: instead of the flood, bench/run's memory
phase for this binary (N bench assets through batchGet; needs bench/run's assets laid out).
Figures and the commands that produced them: bench/RESULTS.md, "Memory accounting".
"""

import argparse
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def freeport() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    return out


def scrape(port: int) -> dict[str, float]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^ams_thumbnails_(cache_entries|cache_bytes)\s+(\S+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


PAD = ""  # --id-len: ids padded to this many characters


def flood(port: int, first: int, count: int, connections: int = 4) -> float:
    started = time.monotonic()
    errors = []

    def worker(k: int) -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for i in range(first + k, first + count, connections):
            c.request("GET", f"/assets/unknown-{PAD}{i:07d}/thumbnails")
            r = c.getresponse()
            r.read()
            if r.status != 404:
                errors.append(r.status)
        c.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"memflood: {len(errors)} answers were not 404, e.g. {errors[0]}")
    return time.monotonic() - started


def found(args, port: int, pid: int) -> dict:
    """bench/run's memory phase, for any binary: ARGS.found assets loaded through batchGet,
    RSS growth after the first 1,000 against the cache's weight."""
    sys.path.insert(0, str(ROOT / "bench"))
    sys.dont_write_bytecode = True
    import contextlib
    import io

    import benchlib

    base = f"http://127.0.0.1:{port}"
    with contextlib.redirect_stdout(io.StringIO()):
        benchlib.warm(base, 0, 1000)
    scrape(port)
    time.sleep(2)
    before = status(pid)
    with contextlib.redirect_stdout(io.StringIO()):
        benchlib.warm(base, 1000, args.found - 1000)
    m = scrape(port)
    time.sleep(2)
    after = status(pid)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("GET", "/assets/bench-000000/thumbnails", headers={"Accept-Encoding": "identity"})
    body = len(c.getresponse().read())
    grown = (after["VmRSS"] - before["VmRSS"]) * 1024
    measured = args.found - 1000
    return {
        "label": args.label,
        "found": args.found,
        "rss_before_kib": before["VmRSS"],
        "rss_after_kib": after["VmRSS"],
        "threads": after["Threads"],
        "body_bytes": body,
        "rss_per_entry": round(grown / measured, 1),
        "beyond_body": round(grown / measured - body, 1),
        "weight_per_entry": round(m["cache_bytes"] / m["cache_entries"], 1),
        "weight_over_rss": round(m["cache_bytes"] / m["cache_entries"] / (grown / measured), 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target/release/ams-thumbnails"))
    ap.add_argument("--ids", type=int, default=50_000)
    ap.add_argument("--ttl", default="20s")
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--label", default="")
    ap.add_argument("--settle", type=float, default=4, help="seconds after expiry before the last look")
    ap.add_argument("--hook", default="", help="shell command run after expiry ({pid} replaced)")
    ap.add_argument("--rounds", type=int, default=1, help="floods of fresh ids, each left to expire")
    ap.add_argument("--id-len", type=int, default=15, help="characters per unknown id (15 to 260)")
    ap.add_argument("--max-bytes", type=int, default=17179869184, help="cache.max_bytes")
    ap.add_argument("--found", type=int, default=0, help="instead: load this many bench assets")
    args = ap.parse_args()
    global PAD
    PAD = "x" * max(0, args.id_len - 15)
    ttl = float(args.ttl.rstrip("s"))
    port = freeport()
    cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    cfg.write(
        f"""[server]
listen = "127.0.0.1:{port}"
max_concurrent_requests = 100000
max_queued_requests = 100000
[log]
filter = "warn"
[cache]
ttl = "1h"
not_found_ttl = "{args.ttl}"
max_bytes = {args.max_bytes}
[source]
kind = "local"
root = "{ROOT / ('target/bench/assets' if args.found else 'samples')}"
container_template = "{{assetId}}"
"""
    )
    cfg.close()
    env = dict(os.environ, TOKIO_WORKER_THREADS="1", AMS_THUMBNAILS_LOG__FILTER="warn")
    env.pop("RUST_LOG", None)
    for kv in args.env:
        k, _, v = kv.partition("=")
        env[k] = v
    proc = subprocess.Popen(
        ["taskset", "-c", "0", args.bin, "--config", cfg.name],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=sys.stderr,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                scrape(port)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("memflood: the service did not start")
                time.sleep(0.1)
        if args.found:
            print(json.dumps(found(args, port, proc.pid)))
            return 0
        flood(port, 9_000_000, 2_000)
        time.sleep(ttl + 1)
        scrape(port)
        time.sleep(2)
        before = status(proc.pid)
        for r in range(args.rounds):
            secs = flood(port, r * args.ids, args.ids)
            m = scrape(port)
            time.sleep(2)
            after = status(proc.pid)
            time.sleep(ttl + 1)
            m2 = scrape(port)
            time.sleep(2)
            scrape(port)  # maintenance once more, then a last look
            if args.hook:
                subprocess.run(args.hook.replace("{pid}", str(proc.pid)), shell=True, check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(args.settle)
            expired = status(proc.pid)
            entries = m.get("cache_entries", 0)
            grown = (after["VmRSS"] - before["VmRSS"]) * 1024
            record = {
                "label": args.label,
                "round": r + 1,
                "ids": args.ids,
                "id_len": 15 + len(PAD),
                "seconds": round(secs, 1),
                "rss_before_kib": before["VmRSS"],
                "rss_after_kib": after["VmRSS"],
                "rss_peak_kib": after["VmHWM"],
                "rss_expired_kib": expired["VmRSS"],
                "threads": after["Threads"],
                "entries": int(entries),
                "cache_bytes": int(m.get("cache_bytes", 0)),
                "weight_per_entry": round(m.get("cache_bytes", 0) / entries, 1) if entries else 0,
                "rss_per_entry": round(grown / args.ids, 1),
                "weight_over_rss": round(m.get("cache_bytes", 0) / grown, 2) if grown > 0 else None,
                "entries_after_expiry": int(m2.get("cache_entries", 0)),
                "returned_kib": after["VmRSS"] - expired["VmRSS"],
                "returned_fraction": round(
                    (after["VmRSS"] - expired["VmRSS"]) / max(1, after["VmRSS"] - before["VmRSS"]), 2
                ),
            }
            print(json.dumps(record), flush=True)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        os.unlink(cfg.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
