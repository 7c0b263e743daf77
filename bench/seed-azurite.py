#!/usr/bin/env python3
"""Seeds Azurite with COUNT benchmark assets: containers asset-bench-000000 ... each with public
(container-level) read access and ten identical JPEG blobs Thumbnail000001.jpg ...

    bench/seed-azurite.py ENDPOINT COUNT JPEG [THREADS]

Reuses the account SAS of scripts/seed-azurite.py (the well-known, public Azurite key: emulator
only). Public access lets the same containers serve both link modes under test: listed with the
account key and linked with account-key SAS, or listed anonymously and linked as public URLs.
Keep-alive connections, THREADS at once (default 8). Prints the seconds it took.
"""

import concurrent.futures
import datetime as dt
import http.client
import importlib.util
import sys
import threading
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("seed", REPO / "scripts" / "seed-azurite.py")
seed = importlib.util.module_from_spec(spec)
spec.loader.exec_module(seed)

THUMBS = 10


def main() -> int:
    endpoint, count, jpeg = sys.argv[1].rstrip("/"), int(sys.argv[2]), Path(sys.argv[3])
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else 8
    data = jpeg.read_bytes()
    sas = seed.account_sas(
        seed.ACCOUNT, seed.KEY, dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)
    )
    parts = urllib.parse.urlsplit(endpoint)
    base_path = parts.path
    local = threading.local()

    def conn() -> http.client.HTTPConnection:
        if not hasattr(local, "c"):
            local.c = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        return local.c

    def send(method: str, path: str, body: bytes, headers: dict[str, str], ok: tuple[int, ...]):
        for attempt in range(3):
            try:
                c = conn()
                c.request(method, path, body=body, headers=headers)
                r = c.getresponse()
                text = r.read()
                if r.status in ok:
                    return r.status
                raise SystemExit(f"seed: {method} {path.split('?')[0]}: {r.status} {text[:300]!r}")
            except (http.client.HTTPException, OSError):
                local.__dict__.pop("c", None)
                if attempt == 2:
                    raise
        return None

    def one(i: int) -> None:
        container = f"asset-bench-{i:06d}"
        send(
            "PUT",
            f"{base_path}/{container}?restype=container&{sas}",
            b"",
            {"Content-Length": "0", "x-ms-blob-public-access": "container"},
            (201, 409),
        )
        for t in range(1, THUMBS + 1):
            send(
                "PUT",
                f"{base_path}/{container}/Thumbnail{t:06d}.jpg?{sas}",
                data,
                {
                    "x-ms-blob-type": "BlockBlob",
                    "Content-Type": "image/jpeg",
                    "Content-Length": str(len(data)),
                },
                (201,),
            )

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(one, range(count)):
            pass
    print(f"{time.monotonic() - started:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
