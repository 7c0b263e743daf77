#!/usr/bin/env python3
"""The ffmpeg encoder's overhead (bench/run's `encode` phase).

    bench/encode.py BIN OUT ROUNDS CPUS

A 10-minute 1280x720 video (made once with ffmpeg's testsrc2, kept in target/bench/encode), one
thumbnail every 10 s at 320x180 and a 10-column sprite. Per round, in alternating order:

- service: the release binary (local source, pinned to CPUS like every server here; its ffmpeg
  inherits that affinity) is asked `POST /assets/{id}/thumbnails:generate` on a fresh copy of
  the asset (a hard link, so the job really runs); `GET /jobs/{name}` is polled every 100 ms;
  wall time = the POST sent to the first answer that says `Finished` (so up to 100 ms of
  polling granularity is in it). The service's RSS is sampled every 20 ms from just before the
  POST to the end: the peak is reported with the idle RSS before.
- direct: the same work run by hand on the same file, pinned to the same CPUs: ffprobe with the
  service's arguments, then ffmpeg with exactly the arguments the service logged for its run
  (`ffmpeg started`), the input and output folder substituted.

Prints one JSON record (bench/benchlib.py renders it): the per-round times and ratios, their
medians, and the peaks.
"""

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ADMIN_KEY = "bench-admin-key-0123456789abcdef"
ROOT = Path(__file__).resolve().parent.parent
SECONDS, WIDTH, HEIGHT = 600, 1280, 720
BODY = {"step": "PT10S", "width": "320", "height": "180", "spriteColumns": 10}
EXPECTED = SECONDS // 10


def video() -> Path:
    """The test video, made once."""
    folder = ROOT / "target" / "bench" / "encode"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"testsrc2-{SECONDS}s-{WIDTH}x{HEIGHT}.mp4"
    if not path.exists():
        print(f"encode.py: making {path.name} (once)", file=sys.stderr)
        partial = path.with_suffix(".partial.mp4")
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
             f"testsrc2=s={WIDTH}x{HEIGHT}:r=25:d={SECONDS}", "-c:v", "libx264",
             "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "50", str(partial)],
            check=True,
        )
        partial.rename(path)
    return path


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(base: str, path: str, method: str = "GET", body=None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("x-api-key", ADMIN_KEY)
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    """The peak of a process's RSS, sampled every 20 ms until stopped."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()

    def run(self):
        while not self.done.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.02)


def logged_args(log: Path, job: str) -> list[str]:
    """The argument list the service logged for `job`'s ffmpeg run."""
    for line in log.read_text().splitlines():
        if "ffmpeg started" not in line:
            continue
        record = json.loads(line)
        fields = record.get("fields", record)
        if fields.get("job") == job:
            args = fields["args"]
            return json.loads(args) if isinstance(args, str) else args
    raise SystemExit(f"encode.py: no 'ffmpeg started' line for {job} in {log}")


def through_service(base: str, pid: int, root: Path, asset: str, log: Path) -> dict:
    idle = rss_kib(pid)
    sampler = Sampler(pid)
    sampler.start()
    started = time.monotonic()
    status, job = request(base, f"/assets/{asset}/thumbnails:generate", "POST", BODY)
    if status != 202:
        raise SystemExit(f"encode.py: generate answered {status}: {job}")
    name = job["name"]
    while True:
        status, job = request(base, f"/jobs/{name}")
        if job.get("state") in ("Finished", "Error", "Canceled"):
            break
        time.sleep(0.1)
    wall = time.monotonic() - started
    sampler.done.set()
    sampler.join()
    if job["state"] != "Finished":
        raise SystemExit(f"encode.py: the job ended {job['state']}: {job}")
    folder = next((root / asset / "thumbnails").iterdir())
    names = [p.name for p in folder.iterdir()]
    thumbs = [n for n in names if "_Thumbnail_" in n]
    if len(thumbs) != EXPECTED or not any(n.endswith("_sprite.jpg") for n in names) or not any(
        n.endswith("_sprite.vtt") for n in names
    ):
        raise SystemExit(f"encode.py: expected {EXPECTED} thumbnails, a sprite and a VTT: {sorted(names)}")
    doc = json.loads((folder / "ams-thumbnails-job.json").read_text())
    return {
        "wall_s": wall,
        "idle_rss_kib": idle,
        "peak_rss_kib": sampler.peak,
        "job": name,
        "started": doc.get("started"),
        "ended": doc.get("ended"),
        "args": logged_args(log, name),
    }


def directly(args: list[str], source: Path, cpus: str) -> dict:
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"encode-direct-{os.getpid()}-{time.monotonic_ns()}"
    out.mkdir()
    try:
        probe = ["ffprobe", "-v", "error", "-protocol_whitelist", "file", "-select_streams", "v:0",
                 "-show_entries", "format=duration:stream=width,height", "-of", "json", "-i", str(source)]
        run = []
        for a in args:
            a = a.replace("<input>", str(source))
            # The service's work folder: the last path segment before the file pattern.
            if "/ams-thumbnails-job-" in a:
                a = str(out / Path(a).name)
            run.append(a)
        time_v = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
        started = time.monotonic()
        subprocess.run(["taskset", "-c", cpus, *probe], check=True, stdout=subprocess.DEVNULL)
        stats = out / "time.txt"
        prefix = [time_v, "-v", "-o", str(stats)] if time_v else []
        subprocess.run(["taskset", "-c", cpus, *prefix, "ffmpeg", *run], check=True,
                       stdout=subprocess.DEVNULL)
        wall = time.monotonic() - started
        peak = None
        if time_v and stats.exists():
            for line in stats.read_text().splitlines():
                if "Maximum resident set size" in line:
                    peak = int(line.split(":")[1])
        made = len([p for p in out.iterdir() if p.name.startswith("t_")])
        if made != EXPECTED:
            raise SystemExit(f"encode.py: the direct run made {made} thumbnails")
        return {"wall_s": wall, "ffmpeg_peak_rss_kib": peak, "command": " ".join(["ffmpeg", *run])}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> int:
    binary, out, rounds, cpus = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    source = video()
    root = out / "encode-assets"
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    sha = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
    config = out / "encode.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\n'
        f'[log]\nformat = "json"\nfilter = "warn,ams_thumbnails::jobs=info"\n'
        f'[source]\nkind = "local"\nroot = "{root}"\n'
        f'[auth]\napi_keys = [{{ name = "bench", sha256 = "{sha}", roles = ["admin"] }}]\n'
        f'[jobs]\nencoder = "ffmpeg"\n'
    )
    log = out / "encode.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMS_THUMBNAILS_") and k != "RUST_LOG"}
    with open(log, "w") as logfile:
        proc = subprocess.Popen(["taskset", "-c", cpus, binary, "--config", str(config)],
                                env=env, stdout=logfile, stderr=logfile)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"encode.py: the service did not start (see {log})")
                time.sleep(0.1)
        results = []
        for r in range(rounds):
            asset = f"clip-{r}"
            (root / asset).mkdir()
            os.link(source, root / asset / "clip.mp4")
            (root / asset / "clip.ism").write_text("<smil/>")
            order = ["service", "direct"] if r % 2 == 0 else ["direct", "service"]
            row = {}
            for what in order:
                if what == "service":
                    row["service"] = through_service(base, proc.pid, root, asset, log)
                else:
                    # The direct run needs the service's arguments: from this round's job if
                    # it ran first, else from the previous round's (the same specification).
                    args = (row.get("service") or results[-1]["service"])["args"]
                    row["direct"] = directly(args, source, cpus)
            row["ratio"] = row["service"]["wall_s"] / row["direct"]["wall_s"]
            print(f"encode.py: round {r + 1}/{rounds}: service {row['service']['wall_s']:.2f} s, "
                  f"direct {row['direct']['wall_s']:.2f} s, ratio {row['ratio']:.3f}, "
                  f"service peak RSS {row['service']['peak_rss_kib'] / 1024:.1f} MiB", file=sys.stderr)
            results.append(row)
            shutil.rmtree(root / asset)
    finally:
        proc.terminate()
        proc.wait(10)
    record = {
        "kind": "encode",
        "name": "encode",
        "rounds": rounds,
        "video": f"{SECONDS} s {WIDTH}x{HEIGHT} H.264 (testsrc2, 25 fps)",
        "service_s": [r["service"]["wall_s"] for r in results],
        "direct_s": [r["direct"]["wall_s"] for r in results],
        "ratios": [r["ratio"] for r in results],
        "median_ratio": statistics.median(r["ratio"] for r in results),
        "median_service_s": statistics.median(r["service"]["wall_s"] for r in results),
        "median_direct_s": statistics.median(r["direct"]["wall_s"] for r in results),
        "idle_rss_kib": min(r["service"]["idle_rss_kib"] for r in results),
        "peak_rss_kib": max(r["service"]["peak_rss_kib"] for r in results),
        "ffmpeg_peak_rss_kib": max((r["direct"]["ffmpeg_peak_rss_kib"] or 0) for r in results) or None,
        "command": results[0]["direct"]["command"],
        "load": os.getloadavg()[0],
    }
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
