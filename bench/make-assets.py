#!/usr/bin/env python3
"""Lays out N local-source asset folders for the benchmark, fast.

    bench/make-assets.py ROOT COUNT JPEG

ROOT/bench-000000 ... ROOT/bench-{COUNT-1:06d}, each holding Thumbnail000001.jpg ...
Thumbnail000010.jpg. Every thumbnail is a hard link (no data copied, no inode per file) to one
of a few copies of JPEG kept in ROOT.src/ (a sibling of ROOT, so not an asset folder itself):
ext4 caps an inode at 65,000 links, so each copy takes at most 50,000. Ids are fixed-width, so
every asset's JSON answer has the same size. Re-running with the same arguments is a no-op
(ROOT/.complete records the count laid out); a larger COUNT adds the missing folders.
"""

import os
import sys
from pathlib import Path

THUMBS = 10
LINKS_PER_SOURCE = 50_000


def asset_id(i: int) -> str:
    return f"bench-{i:06d}"


def main() -> int:
    root, count, jpeg = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    marker = root / ".complete"
    done = int(marker.read_text()) if marker.exists() else 0
    if done >= count:
        return 0
    src = root.with_name(root.name + ".src")
    root.mkdir(parents=True, exist_ok=True)
    src.mkdir(parents=True, exist_ok=True)
    data = jpeg.read_bytes()
    start = done
    for i in range(start, count):
        block = i // LINKS_PER_SOURCE
        folder = root / asset_id(i)
        folder.mkdir(exist_ok=True)
        for t in range(1, THUMBS + 1):
            source = src / f"{block:03d}-{t:02d}.jpg"
            if not source.exists():
                source.write_bytes(data)
            target = folder / f"Thumbnail{t:06d}.jpg"
            try:
                os.link(source, target)
            except FileExistsError:
                pass
    marker.write_text(str(count))
    return 0


if __name__ == "__main__":
    sys.exit(main())
