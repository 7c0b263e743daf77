#!/usr/bin/env python3
"""Groups bench/profile's perf samples: share of the server's CPU and ns of CPU per request.

    bench/perf-groups.py PROFILE_DIR [SECONDS]

Reads PROFILE_DIR/perf-{cached,bare}.data (perf record -e cpu-clock for SECONDS while oha ran)
and perf-{cached,bare}-oha.json (for requests/s). Requests in the window: requests/s x SECONDS.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

GROUPS = [
    ("moka (and its crossbeam read-op channel)", lambda d, s: "moka" in s or "crossbeam" in s),
    (
        "malloc/free",
        lambda d, s: d.startswith("libc")
        and re.match(r"(malloc|_int_malloc|_int_free|cfree|free|malloc_consolidate|unlink_chunk|realloc|_int_realloc)", s),
    ),
    ("libc memcpy/memcmp", lambda d, s: d.startswith("libc") and s.startswith("__mem")),
    ("metrics", lambda d, s: "metrics" in s),
    ("hyper/httparse", lambda d, s: "hyper" in s or "httparse" in s),
    ("http headers", lambda d, s: "header" in s.lower()),
    ("tokio", lambda d, s: "tokio" in s),
    ("clock_gettime (vdso)", lambda d, s: "vdso" in d),
]


def main() -> int:
    out = Path(sys.argv[1])
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 8
    print("== perf, grouped: share of the server's CPU samples, and ns of CPU per request")
    for what in ("cached", "bare"):
        data = out / f"perf-{what}.data"
        if not data.exists():
            continue
        text = subprocess.run(
            ["perf", "report", "-i", str(data), "--stdio", "--no-children", "--sort", "dso,symbol"],
            capture_output=True, text=True, check=False,
        ).stdout
        # cpu-clock's event count is the sampled CPU time in ns.
        cpu_total_ns = int(re.search(r"# Event count \(approx\.\): (\d+)", text).group(1))
        rps = json.loads((out / f"perf-{what}-oha.json").read_text())["summary"]["requestsPerSec"]
        cpu_ns = cpu_total_ns / (rps * seconds)
        groups: dict[str, float] = {}
        for line in text.splitlines():
            m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*?)\s*$", line)
            if not m:
                continue
            pct, dso, kind, sym = float(m.group(1)), m.group(2), m.group(3), m.group(4)
            group = "kernel" if kind == "k" else next((g for g, test in GROUPS if test(dso, sym)), "other user space")
            groups[group] = groups.get(group, 0) + pct
        print(f"   {what}: {rps:,.0f} req/s, {cpu_ns:,.0f} ns of server CPU per request")
        for group, pct in sorted(groups.items(), key=lambda kv: -kv[1]):
            print(f"      {pct:5.1f}%  {pct / 100 * cpu_ns:6,.0f} ns  {group}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
