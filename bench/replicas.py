#!/usr/bin/env python3
"""The shared tier's measurements (bench/run's `shared` phase): replicas of the release binary
against one redis-server, over the generated local assets.

    bench/replicas.py storm        BIN ASSETS OUT REDIS_PORT CPUS FIRST COUNT MODE
    bench/replicas.py invalidation BIN ASSETS OUT REDIS_PORT CPUS FIRST TRIALS
    bench/replicas.py redis-memory BIN ASSETS OUT REDIS_PORT CPUS FIRST COUNT

Each prints one JSON record (bench/benchlib.py renders them):
- storm: three replicas, COUNT cold ids each asked through all three at once; MODE `islands`
  (no [cache.shared]) or `shared`; metadata (locate) and list calls counted at each replica's
  /metrics, summed.
- invalidation: three shared replicas; per trial an asset cached on all three gets an eleventh
  thumbnail on disk, `DELETE /assets/{id}/cache` goes to replica 1, and replicas 2 and 3 are
  polled until both list it: the latency from sending the DELETE to the last fresh answer.
- redis-memory: `INFO memory` used_memory before and after COUNT assets are loaded through one
  shared replica, per asset, against the JSON body.
"""

import concurrent.futures
import hashlib
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ADMIN_KEY = "bench-admin-key-0123456789abcdef"
METRIC = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def asset_id(i: int) -> str:
    return f"bench-{i:06d}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Replica:
    def __init__(self, name, binary, assets, out, cpus, redis_port, latency="0s", prefix="bench:"):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        sha = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
        shared = (
            # A timeout no loaded core reaches: a measurement must never see the tier skipped.
            f'[cache.shared]\nurl = "redis://127.0.0.1:{redis_port}"\nkey_prefix = "{prefix}"\n'
            f'timeout = "1s"\n'
            if redis_port
            else ""
        )
        config = Path(out) / f"{name}.toml"
        config.write_text(
            f'[server]\nlisten = "127.0.0.1:{self.port}"\nmax_concurrent_requests = 100000\n'
            f'max_queued_requests = 100000\nrequest_timeout = "300s"\n'
            f'[log]\nfilter = "warn"\n'
            f'[source]\nkind = "local"\nroot = "{assets}"\ncontainer_template = "{{assetId}}"\n'
            f'[auth]\napi_keys = [{{ name = "ops", sha256 = "{sha}", roles = ["admin"] }}]\n'
            f'[bench]\nupstream_latency = "{latency}"\n'
            f'[cache]\nttl = "1h"\nmax_bytes = 17179869184\n{shared}'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("AMS_THUMBNAILS_")}
        env["TOKIO_WORKER_THREADS"] = "1"
        self.log = open(Path(out) / f"{name}.log", "w")
        self.proc = subprocess.Popen(
            ["taskset", "-c", cpus, binary, "--config", str(config)],
            env=env,
            stdout=self.log,
            stderr=self.log,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.base}/healthz", timeout=2) as r:
                    r.read()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit(f"replicas.py: {name} did not start (see {self.log.name})")
                time.sleep(0.1)
        if redis_port:
            # Its notice channel is subscribed once /readyz reports the shared tier up.
            deadline = time.monotonic() + 10
            while '"shared-cache","required":false,"status":"up"' not in get(self.base, "/readyz")[1]:
                if time.monotonic() > deadline:
                    raise SystemExit(f"replicas.py: {name}'s shared tier never came up")
                time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def metrics(self) -> dict:
        out = {}
        with urllib.request.urlopen(f"{self.base}/metrics", timeout=30) as r:
            for line in r.read().decode().splitlines():
                m = METRIC.match(line)
                if m:
                    # Prefix-agnostic: `ams_thumbnails_upstream_requests_total` or not.
                    name = m.group(1).removeprefix("ams_thumbnails_")
                    out[name + (m.group(2) or "")] = float(m.group(3))
        return out


def get(base: str, path: str, method: str = "GET", headers=None) -> tuple[int, str]:
    request = urllib.request.Request(base + path, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def count_calls(before: dict, after: dict, operation: str) -> float:
    key = f'upstream_requests_total{{backend="local",operation="{operation}"'
    total = lambda d: sum(v for k, v in d.items() if k.startswith(key))
    return total(after) - total(before)


def redis_cli(port: int, *args: str) -> str:
    return subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=60
    ).stdout


def storm(binary, assets, out, redis_port, cpus, first, count, mode):
    redis_port = int(redis_port) if mode == "shared" else 0
    if redis_port:
        redis_cli(redis_port, "FLUSHALL")
    # 20 ms of simulated upstream latency (as the cold phase): the three replicas' loads overlap.
    replicas = [
        Replica(f"storm-{mode}-{i}", binary, assets, out, cpus, redis_port, latency="20ms", prefix=f"storm-{first}:")
        for i in range(3)
    ]
    try:
        before = [r.metrics() for r in replicas]
        jobs = [(r, asset_id(i)) for i in range(first, first + count) for r in replicas]
        started = time.monotonic()
        codes: dict[str, int] = {}
        with concurrent.futures.ThreadPoolExecutor(96) as pool:
            for status, _ in pool.map(lambda job: get(job[0].base, f"/assets/{job[1]}/thumbnails"), jobs):
                codes[str(status)] = codes.get(str(status), 0) + 1
        wall = time.monotonic() - started
        after = [r.metrics() for r in replicas]
    finally:
        for r in replicas:
            r.stop()
    per = lambda op: sum(count_calls(b, a, op) for b, a in zip(before, after)) / count
    print(json.dumps({
        "kind": "storm", "name": mode, "assets": count, "requests": len(jobs), "codes": codes,
        "wall_s": wall, "locate": per("locate"), "list": per("list"), "link": per("link"),
        "command": f"python3 bench/replicas.py storm BIN ASSETS OUT REDIS_PORT CPUS {first} {count} {mode}",
    }))


def invalidation(binary, assets, out, redis_port, cpus, first, trials):
    redis_cli(int(redis_port), "FLUSHALL")
    replicas = [Replica(f"inval-{i}", binary, assets, out, cpus, int(redis_port), prefix="inval:") for i in range(3)]
    latencies = []
    try:
        conns = [http.client.HTTPConnection("127.0.0.1", r.port, timeout=10) for r in replicas]

        def thumbnails(c, aid) -> int:
            c.request("GET", f"/assets/{aid}/thumbnails")
            r = c.getresponse()
            body = r.read()
            assert r.status == 200, (r.status, body[:200])
            return len(json.loads(body)["thumbnails"])

        pool = concurrent.futures.ThreadPoolExecutor(2)
        for t in range(first, first + trials):
            aid = asset_id(t)
            for c in conns:
                assert thumbnails(c, aid) == 10
                thumbnails(c, aid)
            folder = Path(assets) / aid
            added = folder / "Thumbnail000011.jpg"
            os.link(folder / "Thumbnail000001.jpg", added)
            try:
                sent = time.monotonic()
                conns[0].request("DELETE", f"/assets/{aid}/cache", headers={"x-api-key": ADMIN_KEY})
                response = conns[0].getresponse()
                response.read()
                assert response.status == 204, response.status

                def until_fresh(c) -> float:
                    while thumbnails(c, aid) != 11:
                        if time.monotonic() - sent > 10:
                            raise SystemExit(f"replicas.py: {aid} still stale after 10 s")
                    return time.monotonic()

                done = list(pool.map(until_fresh, conns[1:]))
                latencies.append((max(done) - sent) * 1000)
            finally:
                added.unlink()
        pool.shutdown()
    finally:
        for r in replicas:
            r.stop()
    latencies.sort()
    q = lambda p: latencies[min(len(latencies) - 1, int(len(latencies) * p))]
    print(json.dumps({
        "kind": "invalidation", "name": "shared", "trials": trials, "p50_ms": q(0.5),
        "p99_ms": q(0.99), "max_ms": latencies[-1],
        "command": f"python3 bench/replicas.py invalidation BIN ASSETS OUT REDIS_PORT CPUS {first} {trials}",
    }))


def redis_memory(binary, assets, out, redis_port, cpus, first, count):
    port = int(redis_port)
    redis_cli(port, "FLUSHALL")
    used = lambda: int(re.search(r"^used_memory:(\d+)", redis_cli(port, "INFO", "memory"), re.M).group(1))
    replica = Replica("redis-memory", binary, assets, out, cpus, port, prefix="mem:")
    try:
        before = used()
        size = 100
        for start in range(first, first + count, size):
            ids = [asset_id(i) for i in range(start, min(start + size, first + count))]
            request = urllib.request.Request(
                f"{replica.base}/assets:batchGet",
                data=json.dumps({"assetIds": ids}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=600) as r:
                assert all(x["status"] == 200 for x in json.load(r)["results"])
        after = used()
        keys = int(redis_cli(port, "DBSIZE").strip() or 0)
        entries = len(redis_cli(port, "--scan", "--pattern", "mem:e:*").split())
        if entries != count:
            raise SystemExit(f"replicas.py: {entries} entries stored in Redis, not {count}")
        body = len(get(replica.base, f"/assets/{asset_id(first)}/thumbnails")[1].encode())
    finally:
        replica.stop()
    print(json.dumps({
        "kind": "redis_memory", "name": "shared", "assets": count, "keys": keys,
        "used_before": before, "used_after": after, "per_asset": (after - before) / count,
        "body_bytes": body,
        "command": f"python3 bench/replicas.py redis-memory BIN ASSETS OUT REDIS_PORT CPUS {first} {count}  # INFO memory used_memory",
    }))


def main() -> int:
    what, binary, assets, out, redis_port, cpus = sys.argv[1:7]
    rest = sys.argv[7:]
    if what == "storm":
        storm(binary, assets, out, redis_port, cpus, int(rest[0]), int(rest[1]), rest[2])
    elif what == "invalidation":
        invalidation(binary, assets, out, redis_port, cpus, int(rest[0]), int(rest[1]))
    elif what == "redis-memory":
        redis_memory(binary, assets, out, redis_port, cpus, int(rest[0]), int(rest[1]))
    else:
        raise SystemExit(__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
