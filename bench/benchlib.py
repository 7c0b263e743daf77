#!/usr/bin/env python3
"""Helpers for bench/run (Python 3 standard library only).

    benchlib.py freeport
    benchlib.py wait-http URL SECONDS
    benchlib.py warm BASE FIRST COUNT [THREADS [SIZE]]  # POST /assets:batchGet, SIZE (100) ids a request
    benchlib.py metrics BASE                          # selected counters as JSON
    benchlib.py cpu PID...                            # CPU seconds (user+system) of processes
    benchlib.py rss PID                               # VmRSS in KiB
    benchlib.py body URL FILE                         # GET without compression; prints the length
    benchlib.py oha-record FILE NAME CPU_SECONDS COMMAND   # one measurement as a JSON line
    benchlib.py cold-record FILE WALL METRICS_BEFORE METRICS_AFTER NAME COMMAND
    benchlib.py memory-record BASE PID RSS_BEFORE_KIB ENTRIES_MEASURED BODY_BYTES GZIP_BYTES COMMAND
    benchlib.py id-regex COUNT                        # regex for ids 0..COUNT-1 (COUNT = k * 10^d)
    benchlib.py show < RECORD                          # one record as a progress line
    benchlib.py report RECORDS RESULTS_MD             # result lines: printed and appended

Asset ids are bench-000000, bench-000001, ... (fixed width: every answer has the same size).
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def asset_id(i: int) -> str:
    return f"bench-{i:06d}"


def freeport() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def wait_http(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                r.read()
                return
        except urllib.error.HTTPError:
            return  # any HTTP answer: it is up
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"benchlib: {url} did not answer within {seconds:g} s")
            time.sleep(0.1)


def warm(base: str, first: int, count: int, threads: int = 4, size: int = 100) -> None:
    """Loads ids [first, first+count) once each through POST /assets:batchGet (SIZE ids a
    request, THREADS requests at once); every one must answer 200."""
    started = time.monotonic()

    def batch(start: int) -> int:
        ids = [asset_id(i) for i in range(start, min(start + size, first + count))]
        request = urllib.request.Request(
            f"{base}/assets:batchGet",
            data=json.dumps({"assetIds": ids}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=600) as r:
                results = json.load(r)["results"]
        except urllib.error.HTTPError as e:
            raise SystemExit(f"benchlib warm: {base}/assets:batchGet answered {e.code}: {e.read()[:300]!r}")
        bad = [x for x in results if x["status"] != 200]
        if bad:
            raise SystemExit(f"benchlib warm: {len(bad)} ids failed, e.g. {json.dumps(bad[0])[:400]}")
        return len(results)

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        done = sum(pool.map(batch, range(first, first + count, size)))
    print(f"{done} {time.monotonic() - started:.1f}")


METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def scrape(base: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = METRIC_LINE.match(line)
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        # Keyed by the short names the code records (the service exports ams_thumbnails_<name>).
        if not name.startswith("ams_thumbnails_"):
            continue
        name = name.removeprefix("ams_thumbnails_")
        if name.startswith(("cache_", "upstream_requests_total", "http_requests_shed_total")):
            out[name + labels] = float(value)
    return out


def metrics(base: str) -> None:
    print(json.dumps(scrape(base), sort_keys=True))


def cpu(pids: list[str]) -> None:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (all threads)
    print(f"{total / tick:.2f}")


def rss(pid: str) -> None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            print(line.split()[1])
            return
    raise SystemExit("benchlib: no VmRSS")


def body(url: str, path: str) -> None:
    request = urllib.request.Request(url, headers={"Accept-Encoding": "identity"})
    with urllib.request.urlopen(request, timeout=30) as r:
        data = r.read()
    Path(path).write_bytes(data)
    print(len(data))


def ms(seconds):
    return None if seconds is None else seconds * 1000


def oha_record(path: str, name: str, cpu_seconds: str, command: str) -> None:
    d = json.loads(Path(path).read_text())
    s = d["summary"]
    codes = {str(k): v for k, v in (d.get("statusCodeDistribution") or {}).items()}
    ok = codes.get("200", 0)
    # Requests still in flight at the -z deadline are reported as aborted: expected, not errors.
    errors = {
        k: v for k, v in (d.get("errorDistribution") or {}).items() if "deadline" not in k
    }
    record = {
        "kind": "load",
        "name": name,
        "rps": s["requestsPerSec"],
        "ok": ok,
        "non200": sum(v for k, v in codes.items() if k != "200"),
        "errors": errors,
        # No answer at all (a service that refuses every connection): no percentiles.
        "p50_ms": ms(d["latencyPercentiles"]["p50"]),
        "p99_ms": ms(d["latencyPercentiles"]["p99"]),
        "cpu_us_per_req": float(cpu_seconds) * 1e6 / ok if ok else None,
        "command": command,
        "loadavg": os.getloadavg()[0],
    }
    print(json.dumps(record))


def cold_record(path: str, wall: str, before: str, after: str, name: str, command: str) -> None:
    times, codes = [], {}
    for line in Path(path).read_text().split():
        code, t = line.split(",")
        codes[code] = codes.get(code, 0) + 1
        times.append(float(t) * 1000)
    times.sort()
    b, a = json.loads(before), json.loads(after)

    def delta(prefix: str) -> float:
        return sum(v for k, v in a.items() if k.startswith(prefix)) - sum(
            v for k, v in b.items() if k.startswith(prefix)
        )

    record = {
        "kind": "cold",
        "name": name,
        "requests": len(times),
        "codes": codes,
        "wall_s": float(wall),
        "p50_ms": times[len(times) // 2],
        "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))],
        "locate": delta('upstream_requests_total{backend="local",operation="locate"'),
        "list": delta('upstream_requests_total{backend="local",operation="list"'),
        "link": delta('upstream_requests_total{backend="local",operation="link"'),
        "misses": delta("cache_misses_total"),
        "coalesced": delta("cache_coalesced_total"),
        "hits": delta("cache_hits_total"),
        "command": command,
        "loadavg": os.getloadavg()[0],
    }
    print(json.dumps(record))


def memory_record(base, pid, rss_before, entries_measured, body_bytes, gzip_bytes, command) -> None:
    m = scrape(base)  # also runs the cache's pending maintenance and drains histogram samples
    time.sleep(2)
    after = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            after = int(line.split()[1])
    entries = int(m.get("cache_entries", 0))
    record = {
        "kind": "memory",
        "name": "memory",
        "rss_before_kib": int(rss_before),
        "rss_after_kib": after,
        "rss_delta_kib": after - int(rss_before),
        "entries": entries,
        "entries_measured": int(entries_measured),
        "body_bytes": int(body_bytes),
        "gzip_bytes": int(gzip_bytes),
        "weight_per_entry": m.get("cache_bytes", 0) / entries if entries else 0,
        "command": command,
    }
    print(json.dumps(record))


def id_regex(count: int) -> None:
    """`bench-` plus six digits covering exactly ids 0..count-1, for oha --rand-regex-url."""
    digits = len(str(count)) - 1
    lead = count // 10**digits
    if lead * 10**digits != count or not 1 <= lead <= 9 or digits + 1 > 6:
        raise SystemExit(f"benchlib: {count} is not k * 10^d (k 1..9, at most 100000)")
    prefix = "0" * (6 - digits - 1)
    print(f"bench-{prefix}[0-{lead - 1}][0-9]{{{digits}}}")


# ---------------------------------------------------------------------------------------------
# Report


def fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def run_info() -> dict[str, str]:
    repo = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    if git("status", "--porcelain", "--untracked-files=no", "--", "src", "Cargo.toml", "Cargo.lock"):
        commit += "+dirty"
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "cores": f"{os.cpu_count()} ({model})" if model else str(os.cpu_count()),
    }


def load_stats(recs: list[dict]) -> str:
    rps = statistics.median(r["rps"] for r in recs)
    p50 = statistics.median(r["p50_ms"] for r in recs)
    p99 = statistics.median(r["p99_ms"] for r in recs)
    cpus = [r["cpu_us_per_req"] for r in recs if r["cpu_us_per_req"]]
    cpu = f", {statistics.median(cpus):.1f} µs CPU/req" if cpus else ""
    return f"{fmt_int(rps)} req/s (p50 {p50:.2f} ms, p99 {p99:.2f} ms{cpu})"


def ratio_row(records: list[dict], a: str, b: str, title: str, target: float):
    ra = [r for r in records if r["kind"] == "load" and r["name"] == a]
    rb = [r for r in records if r["kind"] == "load" and r["name"] == b]
    if not ra or not rb:
        return None
    # Paired by round (adjacent runs see the same machine), then the median of the ratios.
    ratios = [x["rps"] / y["rps"] for x, y in zip(ra, rb)]
    ratio = statistics.median(ratios)
    cpu_a = [r["cpu_us_per_req"] for r in ra if r["cpu_us_per_req"]]
    cpu_b = [r["cpu_us_per_req"] for r in rb if r["cpu_us_per_req"]]
    cpu_ratio = (
        f"; CPU/req ratio {statistics.median(cpu_b) / statistics.median(cpu_a):.2f}"
        if cpu_a and cpu_b
        else ""
    )
    verdict = "PASS" if ratio >= target else "FAIL"
    result = (
        f"**{ratio:.2f}** {verdict} ({a}: {load_stats(ra)}; {b}: {load_stats(rb)}; "
        f"per round {' / '.join(f'{x:.2f}' for x in ratios)}{cpu_ratio}; "
        f"load avg {max(r['loadavg'] for r in ra + rb):.1f})"
    )
    command = f"`{ra[0]['command']}` vs `{rb[0]['command']}`"
    return title, result, f">= {target:.2f}", command


ATTACKS = {
    "slowloris": "300 connections sending a header byte per second",
    "idle": "1,100 idle connections under a 1,024 open-file limit",
    "headers": "1,000 connections sending 384 KB of header lines each",
    "methods": "made-up methods, 2,000/s",
    "slow-bodies": "1,060 batch bodies at ~200 B/s",
    "wrong-keys": "wrong API keys, 2,000/s",
    "batch": "200 batches/s of 100 distinct ids",
    "negative": "unknown ids (new negative entries), 2,000/s",
}
# The goal for peak RSS during the header and negative-entry floods: 100 MB.
PEAK_GOAL_MIB = 100e6 / 2**20


def shared_rows(records: list[dict], meta: dict) -> list[tuple[str, str, str, str]]:
    """The shared phase: storms, invalidation latency, Redis memory, moka vs Redis hits."""
    rows = []
    for r in records:
        if r["kind"] == "storm":
            exact = r["locate"] == 1 and r["list"] == 1
            goal = r["name"] == "shared"
            result = (
                f"**{r['locate']:.3f} metadata + {r['list']:.3f} list** calls per asset in total "
                f"({r['link']:.3f} signings; {r['requests']:,} requests in {r['wall_s']:.2f} s, "
                f"status {r['codes']})" + (f" {'PASS' if exact else 'FAIL'}" if goal else "")
            )
            title = (
                f"Three replicas, {r['assets']:,} cold assets each asked through all three at once, "
                + ("`[cache.shared]` (Redis)" if goal else "no shared tier (islands, the baseline)")
            )
            rows.append((title, result, "1 + 1 per asset" if goal else "(baseline: up to 3 + 3)", f"`{r['command']}`"))
        elif r["kind"] == "invalidation":
            ok = r["p99_ms"] < 100
            rows.append((
                f"Invalidation latency, three replicas: `DELETE` on one to the last serving the fresh answer ({r['trials']} trials)",
                f"p50 {r['p50_ms']:.1f} ms, **p99 {r['p99_ms']:.1f} ms**, max {r['max_ms']:.1f} ms {'PASS' if ok else 'FAIL'}",
                "p99 < 100 ms",
                f"`{r['command']}`",
            ))
        elif r["kind"] == "redis_memory":
            rows.append((
                f"Redis memory per cached asset ({r['assets']:,} assets × 10 thumbnails, {r['keys']:,} keys)",
                f"**{r['per_asset']:,.0f} B per asset** (`used_memory` {r['used_before']:,} → {r['used_after']:,} B) "
                f"against a {r['body_bytes']:,} B JSON body ({r['per_asset'] / r['body_bytes']:.2f}x)",
                "(reported)",
                f"`{r['command']}`",
            ))
    ids = meta.get("ids", "?")
    rows.append(ratio_row(
        records, "shared-moka", "shared-bare",
        f"Cached (moka hit) vs bare handler with `[cache.shared]` configured, {ids:,} ids" if meta else "Cached vs bare, shared configured",
        0.90,
    ))
    redis_row = ratio_row(
        records, "shared-redis", "shared-moka",
        f"Shared-tier hit (moka miss, Redis GET) vs moka hit, {ids:,} ids" if meta else "Shared-tier hit vs moka hit",
        0.0,
    )
    if redis_row:
        title, result, _, command = redis_row
        rows.append((title, result.replace(" PASS", ""), "(reported)", command))
    return [r for r in rows if r]


def hostile_rows(records: list[dict]) -> list[tuple[str, str, str, str]]:
    rows = []
    for mode, what in ATTACKS.items():
        att = [r for r in records if r["kind"] == "load" and r["name"] == f"attack-{mode}"]
        quiet = [r for r in records if r["kind"] == "load" and r["name"] == f"quiet-{mode}"]
        if not att or not quiet:
            continue
        inf = float("inf")
        p99 = [(a["p99_ms"] or inf) / (q["p99_ms"] or inf) for a, q in zip(att, quiet)]
        # Throughput counts the known asset's 200s only.
        good = lambda r: r["rps"] * r["ok"] / max(r["ok"] + r["non200"], 1)  # noqa: E731
        rps = [good(a) / good(q) if good(q) else 0.0 for a, q in zip(att, quiet)]
        peaks = [r for r in records if r["kind"] == "peak" and r["name"] == mode]
        peak = max(((p["peak_kib"] - p["idle_kib"]) / 1024 for p in peaks), default=0.0)
        memory_goal = mode in ("headers", "negative")
        failed = sum(a["non200"] + sum(a["errors"].values()) + (not a["ok"]) for a in att + quiet)
        ok = statistics.median(p99) <= 5 and statistics.median(rps) >= 0.8 and not failed
        ok = ok and (not memory_goal or peak < PEAK_GOAL_MIB)
        sent = (peaks[-1].get("attack") or {}) if peaks else {}
        sent = ", ".join(f"{k} {v:,}" for k, v in sent.items() if k != "mode")
        result = (
            f"p99 **{statistics.median(p99):.2f}x** "
            f"({statistics.median(q['p99_ms'] or inf for q in quiet):.2f} → "
            f"{statistics.median(a['p99_ms'] or inf for a in att):.2f} ms), throughput "
            f"**{statistics.median(rps):.2f}x** ({fmt_int(statistics.median(good(q) for q in quiet))} → "
            f"{fmt_int(statistics.median(good(a) for a in att))} req/s), peak RSS "
            f"**+{peak:.1f} MiB**, {failed:,} known-asset failures "
            f"{'PASS' if ok else 'FAIL'} (per round p99 "
            f"{' / '.join(f'{x:.2f}' for x in p99)}, throughput {' / '.join(f'{x:.2f}' for x in rps)}; "
            f"last attack: {sent or '?'})"
        )
        target = "p99 <= 5x, throughput >= 0.80x" + (
            ", peak RSS < 100 MB above idle" if memory_goal else ""
        )
        rows.append((f"Hostile: {mode} ({what}) vs quiet", result, target, f"`{att[0]['command']}`"))
    return rows


def encode_rows(records: list[dict]) -> list[tuple[str, str, str, str]]:
    """The ffmpeg encoder's job against the same work run directly (bench/encode.py)."""
    rows = []
    for r in records:
        if r["kind"] != "encode":
            continue
        verdict = "PASS" if r["median_ratio"] <= 1.15 else "FAIL"
        per_round = " / ".join(f"{x:.3f}" for x in r["ratios"])
        ffmpeg_peak = (
            f"; ffmpeg's own peak {r['ffmpeg_peak_rss_kib'] / 1024:,.1f} MiB"
            if r.get("ffmpeg_peak_rss_kib")
            else ""
        )
        result = (
            f"**{r['median_ratio']:.3f}x** {verdict} (job through the service {r['median_service_s']:.2f} s, "
            f"direct ffprobe + ffmpeg {r['median_direct_s']:.2f} s, medians of {r['rounds']} alternating rounds; "
            f"per round {per_round}); service RSS **peak {r['peak_rss_kib'] / 1024:,.1f} MiB** during the job "
            f"(idle {r['idle_rss_kib'] / 1024:,.1f} MiB){ffmpeg_peak}; load avg {r['load']:.1f}"
        )
        rows.append(
            (
                f"ffmpeg encoder: {r['video']}, a thumbnail every 10 s at 320x180 + a 10-column sprite, "
                "job wall time vs the same work run directly",
                result,
                "<= 1.15x",
                f"`python3 bench/encode.py BIN OUT {r['rounds']} CPUS` (direct: `{r['command'][:160]}…`)",
            )
        )
    return rows


def report(records_path: str, results_md: str) -> None:
    records = [json.loads(line) for line in Path(records_path).read_text().splitlines() if line]
    info = run_info()
    meta = {r["name"]: r for r in records if r["kind"] == "meta"}
    rows: list[tuple[str, str, str, str]] = []
    m = meta.get("local", {})
    ids = m.get("ids", 10000)
    rows.append(
        ratio_row(
            records,
            "cached",
            "bare",
            f"Cached `GET /assets/{{id}}/thumbnails`, {ids:,} ids, vs bare handler "
            f"({m.get('body_bytes', '?')} B bodies)",
            0.90,
        )
    )
    s = meta.get("signed", {})
    rows.append(
        ratio_row(
            records,
            "signed",
            "public",
            f"Signed (account-key SAS) cached vs unsigned (public) cached, Azurite, "
            f"{s.get('ids', '?'):,} ids ({s.get('signed_bytes', '?')} B vs {s.get('public_bytes', '?')} B bodies)"
            if s
            else "Signed cached vs unsigned cached",
            0.95,
        )
    )
    rows.append(
        ratio_row(
            records,
            "cached",
            "nginx",
            f"Cached route vs nginx static file (same JSON, same {ids:,} paths)",
            0.80,
        )
    )
    for r in records:
        if r["kind"] != "cold":
            continue
        n = r["requests"]
        assets = m.get("cold_assets", 1000)
        per = {k: r[k] / assets for k in ("locate", "list", "link", "misses")}
        exact = per["locate"] == 1 and per["list"] == 1
        result = (
            f"**{fmt_int(assets / r['wall_s'])} assets/s** ({n:,} requests in {r['wall_s']:.2f} s, "
            f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, status {r['codes']}); "
            f"per asset: **{per['locate']:.3f} metadata + {per['list']:.3f} list** calls "
            f"({per['link']:.3f} link, {per['misses']:.3f} loads, "
            f"{r['coalesced']:.0f} requests coalesced, {r['hits']:.0f} hits) "
            f"{'PASS' if exact else 'FAIL'}"
        )
        rows.append((r["name"], result, "1 + 1 per asset", f"`{r['command']}`"))
    for r in records:
        if r["kind"] != "memory":
            continue
        per_entry = r["rss_delta_kib"] * 1024 / r["entries_measured"]
        beyond = per_entry - r["body_bytes"]
        verdict = "PASS" if beyond <= 1024 else "FAIL"
        result = (
            f"RSS {r['rss_before_kib'] / 1024:,.1f} → {r['rss_after_kib'] / 1024:,.1f} MiB for "
            f"{r['entries_measured']:,} entries: **{per_entry:,.0f} B/entry**, JSON body "
            f"{r['body_bytes']:,} B, so **{beyond:,.0f} B beyond the body** {verdict} "
            f"(the gzip variant, {r['gzip_bytes']:,} B, is made on an entry's first gzip request: "
            f"not held here; cache weigher "
            f"{r['weight_per_entry']:,.0f} B/entry; {r['entries']:,} entries cached)"
        )
        rows.append(
            (
                f"Memory, {r['entries']:,} cached assets × 10 thumbnails",
                result,
                "<= 1,024 B/entry beyond body",
                f"`{r['command']}`",
            )
        )
    rows += shared_rows(records, meta.get("shared", {}))
    rows += hostile_rows(records)
    rows += encode_rows(records)
    rows = [r for r in rows if r]
    lines = []
    for title, result, target, command in rows:
        cells = [info["date"], info["commit"], info["cores"], title, result, target, command]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    with open(results_md, "a", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
    for title, result, target, _ in rows:
        print(f"{title}: {result} [target {target}]")
    print(f"({info['date']}, commit {info['commit']}, cores: {info['cores']}; appended to {results_md})")


def show() -> None:
    """Prints the record on stdin as a progress line; fails on a load run with errors."""
    r = json.loads(sys.stdin.read())
    if r["kind"] == "load":
        print(
            f"bench:   {r['name']:<7} {r['rps']:>9,.0f} req/s  p50 {r['p50_ms'] or 0:.2f} ms  "
            f"p99 {r['p99_ms'] or 0:.2f} ms  {(r['cpu_us_per_req'] or 0):.1f} us CPU/req  "
            f"{r['ok']:,} ok, {r['non200']:,} other, errors {r['errors'] or 'none'}",
            file=sys.stderr,
        )
        # During an attack, failures are what is measured: reported in the row, not fatal.
        hostile = r["name"].startswith(("attack-", "quiet-"))
        if (r["non200"] or r["errors"] or not r["ok"]) and not hostile:
            raise SystemExit(
                f"bench: FAILED: {r['name']}: {r['non200']} non-200 answers, errors {r['errors']}"
            )
    elif r["kind"] == "cold":
        print(
            f"bench:   {r['requests']} requests in {r['wall_s']:.2f} s, p50 {r['p50_ms']:.1f} ms, "
            f"p99 {r['p99_ms']:.1f} ms; locate {r['locate']:.0f}, list {r['list']:.0f}, "
            f"loads {r['misses']:.0f}, coalesced {r['coalesced']:.0f}; status {r['codes']}",
            file=sys.stderr,
        )


def main() -> int:
    cmd, args = sys.argv[1], sys.argv[2:]
    match cmd:
        case "freeport":
            freeport()
        case "wait-http":
            wait_http(args[0], float(args[1]))
        case "warm":
            warm(args[0], int(args[1]), int(args[2]), *(int(a) for a in args[3:5]))
        case "metrics":
            metrics(args[0])
        case "cpu":
            cpu(args)
        case "rss":
            rss(args[0])
        case "body":
            body(args[0], args[1])
        case "oha-record":
            oha_record(*args)
        case "cold-record":
            cold_record(*args)
        case "memory-record":
            memory_record(*args)
        case "id-regex":
            id_regex(int(args[0]))
        case "show":
            show()
        case "report":
            report(args[0], args[1])
        case _:
            raise SystemExit(f"benchlib: unknown command {cmd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
