#!/usr/bin/env python3
"""Regenerate the sample Azure Media Services asset containers in samples/.

Usage (from the repo root or anywhere):

    python3 samples/generate.py

Every file is written deterministically: no random state, no timestamps in
image metadata, and videos are encoded single-threaded with ffmpeg's bitexact
flags, so running the script twice yields byte-identical files (for a given
Pillow / ffmpeg version).

Requirements:
  * Pillow (``pip install pillow``) for the JPEG / PNG thumbnails.
  * ffmpeg with libx264 (``apt-get install ffmpeg``) for the tiny .mp4 files.
    Without ffmpeg an existing .mp4 is kept as it is; a missing one is written
    as a minimal ISO-BMFF file (``ftyp`` + ``free`` boxes only, no media).
"""

from __future__ import annotations

import colorsys
import json
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    from PIL import Image, ImageDraw, ImageFont
except ImportError:  # pragma: no cover - only hit on a machine without Pillow
    sys.exit("generate.py needs Pillow: pip install pillow")

ROOT = Path(__file__).resolve().parent

JPEG_QUALITY = 70
VIDEO_SECONDS = 2  # real duration of every generated .mp4
VIDEO_SIZE = "160x90"  # real frame size of every generated .mp4
VIDEO_FPS = 10
HNS = 10_000_000  # Smooth Streaming timescale: 100 ns ticks per second


# --------------------------------------------------------------------------
# Thumbnail drawing
# --------------------------------------------------------------------------

def fmt_time(seconds: float) -> str:
    """00:00:04.000 (WebVTT style)."""
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (int(r * 255), int(g * 255), int(b * 255))


def draw_frame(width: int, height: int, asset: str, index: int, total: int,
               seconds: float, hue: float) -> Image.Image:
    """One visibly distinct frame: gradient + moving shapes + big labels.

    Everything is a pure function of the arguments (no randomness).
    """
    img = Image.new("RGB", (width, height))
    d = ImageDraw.Draw(img)

    # Diagonal-ish two-colour gradient whose hues rotate with the frame index.
    h0 = hue + index * 0.07
    left, right = rgb(h0, 0.75, 0.85), rgb(h0 + 0.33, 0.85, 0.35)
    for x in range(width):
        t = x / max(1, width - 1)
        col = tuple(int(a + (b - a) * t) for a, b in zip(left, right))
        d.line([(x, 0), (x, height)], fill=col)

    # A bright disc that travels left -> right across the frames.
    frac = (index - 1) / max(1, total - 1)
    r = height // 5
    cx = int(r + frac * (width - 2 * r))
    cy = int(height * 0.72)
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=rgb(h0 + 0.5, 0.3, 1.0),
              outline=(0, 0, 0), width=max(1, width // 160))

    # A progress bar along the bottom.
    bar_h = max(2, height // 30)
    d.rectangle([0, height - bar_h, int(width * index / total), height],
                fill=(255, 255, 255))

    # Big frame number and time, plus the asset name.
    big = ImageFont.load_default(size=max(10, height // 4))
    small = ImageFont.load_default(size=max(8, height // 10))
    pad = max(2, width // 64)
    stroke = max(1, height // 90)
    d.text((pad, pad), f"#{index}", font=big, fill=(255, 255, 255),
           stroke_width=stroke, stroke_fill=(0, 0, 0))
    d.text((width - pad, pad), f"t={seconds:g}s", font=big, anchor="ra",
           fill=(255, 255, 0), stroke_width=stroke, stroke_fill=(0, 0, 0))
    d.text((pad, pad + height // 4 + pad), asset, font=small,
           fill=(255, 255, 255), stroke_width=max(1, stroke // 2),
           stroke_fill=(0, 0, 0))
    return img


def save_jpeg(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Baseline (non-progressive) JFIF, no EXIF, fixed quality.
    img.save(path, "JPEG", quality=JPEG_QUALITY, progressive=False,
             optimize=True)


def save_png(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Pillow writes no tIME chunk unless asked to.
    img.save(path, "PNG", optimize=True)


def scaled(img: Image.Image, w: int, h: int) -> Image.Image:
    return img.resize((w, h), Image.Resampling.LANCZOS)


# --------------------------------------------------------------------------
# Videos and streaming manifests
# --------------------------------------------------------------------------

MINIMAL_MP4 = (
    # ftyp: major brand isom, minor 0x200, compatible isom iso2 avc1 mp41
    struct.pack(">I4s4sI16s", 32, b"ftyp", b"isom", 0x200,
                b"isomiso2avc1mp41")
    # free box with 8 payload bytes
    + struct.pack(">I4s8s", 16, b"free", b"\0" * 8)
)


def make_mp4(path: Path, source: str, kbps: int) -> str:
    """Write a tiny real H.264 .mp4 and return how it was made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        if path.exists():
            return "kept"
        path.write_bytes(MINIMAL_MP4)
        return "minimal"
    lavfi = (f"{source}=size={VIDEO_SIZE}:rate={VIDEO_FPS}"
             f":duration={VIDEO_SECONDS}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / path.name
        cmd = [
            ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", lavfi,
            "-c:v", "libx264", "-preset", "medium", "-profile:v", "high",
            "-pix_fmt", "yuv420p", "-threads", "1",
            "-b:v", f"{kbps}k", "-maxrate", f"{kbps}k",
            "-bufsize", f"{2 * kbps}k",
            "-g", str(VIDEO_FPS * VIDEO_SECONDS),
            "-an", "-map_metadata", "-1",
            "-fflags", "+bitexact", "-flags:v", "+bitexact",
            "-movflags", "+faststart",
            str(out),
        ]
        subprocess.run(cmd, check=True)
        shutil.copyfile(out, path)
    return "ffmpeg"


def _boxes(data: bytes, start: int, end: int):
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            return
        yield kind, pos + header, pos + size
        pos += size


def codec_private_data(path: Path) -> str | None:
    """SPS/PPS of the file's avcC box as Smooth Streaming CodecPrivateData."""
    data = path.read_bytes()

    def find(start, end, chain):
        for kind, body, stop in _boxes(data, start, end):
            if kind != chain[0]:
                continue
            if len(chain) == 1:
                return body, stop
            if kind == b"stsd":
                body += 8  # version/flags + entry count
            if kind == b"avc1":
                body += 78  # VisualSampleEntry fields
            found = find(body, stop, chain[1:])
            if found:
                return found
        return None

    hit = find(0, len(data), [b"moov", b"trak", b"mdia", b"minf", b"stbl",
                              b"stsd", b"avc1", b"avcC"])
    if not hit:
        return None
    b, _ = hit
    pos = b + 5
    out = b""
    n_sps = data[pos] & 0x1F
    pos += 1
    for _ in range(n_sps):
        (ln,) = struct.unpack_from(">H", data, pos)
        out += b"\0\0\0\1" + data[pos + 2:pos + 2 + ln]
        pos += 2 + ln
    n_pps = data[pos]
    pos += 1
    for _ in range(n_pps):
        (ln,) = struct.unpack_from(">H", data, pos)
        out += b"\0\0\0\1" + data[pos + 2:pos + 2 + ln]
        pos += 2 + ln
    return out.hex().upper()


def rendition(name: str) -> tuple[int, int, int]:
    """ocean_1280x720_3000.mp4 -> (1280, 720, 3000) — nominal values."""
    _, res, kbps = Path(name).stem.rsplit("_", 2)
    w, h = res.split("x")
    return int(w), int(h), int(kbps)


def write_ism(path: Path, basename: str, mp4s: list[str],
              with_ismc: bool = True) -> None:
    """Smooth Streaming server manifest (SMIL), as AMS writes next to mp4s."""
    lines = [
        '<?xml version="1.0" encoding="utf-8" standalone="yes"?>',
        '<smil xmlns="http://www.w3.org/2001/SMIL20/Language">',
        "  <head>",
    ]
    if with_ismc:
        lines.append('    <meta name="clientManifestRelativePath" '
                     f'content="{basename}.ismc" />')
    lines += [
        '    <meta name="formats" content="mp4-v3" />',
        "  </head>",
        "  <body>",
        "    <switch>",
    ]
    for mp4 in mp4s:
        _, _, kbps = rendition(mp4)
        lines += [
            f'      <video src="{Path(mp4).name}" '
            f'systemBitrate="{kbps * 1000}">',
            '        <param name="trackID" value="1" valuetype="data" />',
            '        <param name="trackName" value="video" '
            'valuetype="data" />',
            "      </video>",
        ]
    lines += ["    </switch>", "  </body>", "</smil>", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8", newline="\n")


def write_ismc(path: Path, mp4_paths: list[Path]) -> None:
    """Smooth Streaming client manifest for the renditions in mp4_paths."""
    dims = [rendition(p.name) for p in mp4_paths]
    max_w = max(w for w, _, _ in dims)
    max_h = max(h for _, h, _ in dims)
    duration = VIDEO_SECONDS * HNS
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<SmoothStreamingMedia MajorVersion="2" MinorVersion="2" '
        f'Duration="{duration}" TimeScale="{HNS}">',
        f'  <StreamIndex Chunks="1" Type="video" '
        f'Url="QualityLevels({{bitrate}})/Fragments(video={{start time}})" '
        f'QualityLevels="{len(mp4_paths)}" Name="video" '
        f'MaxWidth="{max_w}" MaxHeight="{max_h}" '
        f'DisplayWidth="{max_w}" DisplayHeight="{max_h}">',
    ]
    for i, (p, (w, h, kbps)) in enumerate(zip(mp4_paths, dims)):
        cpd = codec_private_data(p) if p.exists() else None
        cpd_attr = f' CodecPrivateData="{cpd}"' if cpd else ""
        lines.append(
            f'    <QualityLevel Index="{i}" Bitrate="{kbps * 1000}" '
            f'FourCC="H264" MaxWidth="{w}" MaxHeight="{h}"{cpd_attr} />')
    lines += [
        f'    <c t="0" d="{duration}" />',
        "  </StreamIndex>",
        "</SmoothStreamingMedia>",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8", newline="\n")


def write_output_manifest(path: Path, source: str,
                          mp4_paths: list[Path]) -> None:
    """AMS v3 `<basename>_manifest.json`: the encoded AssetFile list."""
    files = []
    for p in mp4_paths:
        w, h, kbps = rendition(p.name)
        files.append({
            "Name": p.name,
            "Size": p.stat().st_size,
            "Duration": f"PT{VIDEO_SECONDS}S",
            "Sources": [{"Name": source}],
            "VideoTracks": [{
                "Id": 1,
                "FourCC": "avc1",
                "Profile": "High",
                "Width": w,
                "Height": h,
                "FrameRate": float(VIDEO_FPS),
                "TargetBitrate": kbps * 1000,
            }],
            "AudioTracks": [],
        })
    text = json.dumps({"AssetFile": files}, indent=2, sort_keys=False)
    path.write_text(text + "\n", encoding="utf-8", newline="\n")


# --------------------------------------------------------------------------
# The assets
# --------------------------------------------------------------------------

VIDEO_METHODS: dict[str, str] = {}


def video_set(folder: Path, basename: str, mp4s: list[tuple[str, str, int]],
              ism: bool = True, ismc: bool = True,
              manifest_source: str | None = None) -> None:
    paths = []
    for rel, source, kbps in mp4s:
        p = folder / rel
        VIDEO_METHODS[str(p.relative_to(ROOT))] = make_mp4(p, source, kbps)
        paths.append(p)
    ism_dir = paths[0].parent
    if ism:
        write_ism(ism_dir / f"{basename}.ism", basename,
                  [p.name for p in paths], with_ismc=ismc)
    if ismc:
        write_ismc(ism_dir / f"{basename}.ismc", paths)
    if manifest_source:
        write_output_manifest(ism_dir / f"{basename}_manifest.json",
                              manifest_source, paths)


def builtin_preset() -> None:
    folder = ROOT / "builtin-preset"
    for i in range(1, 6):
        t = (i - 1) * 2
        img = draw_frame(320, 180, "builtin-preset / ocean", i, 5, t, 0.55)
        save_jpeg(img, folder / f"Thumbnail{i:06d}.jpg")
    video_set(folder, "ocean", [
        ("ocean_1280x720_3000.mp4", "testsrc2", 24),
        ("ocean_960x540_1500.mp4", "testsrc2", 12),
    ], manifest_source="ocean.mp4")


def multi_rendition() -> None:
    folder = ROOT / "multi-rendition"
    for i in range(1, 5):
        t = (i - 1) * 2
        big = draw_frame(640, 360, "multi-rendition / river", i, 4, t, 0.0)
        save_jpeg(big, folder / f"river_large_{i:06d}.jpg")
        save_jpeg(scaled(big, 160, 90), folder / f"river_small_{i:06d}.jpg")
    for i in range(1, 3):
        t = (i - 1) * 4
        png = draw_frame(320, 180, "multi-rendition / river (png)", i, 2, t,
                         0.15)
        save_png(png, folder / f"river_320x180_{i:06d}.png")
    video_set(folder, "river", [("river_1280x720_2000.mp4", "testsrc", 16)])


def sprite_storyboard() -> None:
    folder = ROOT / "sprite-storyboard"
    cols, rows, tw, th = 4, 3, 160, 90
    sheet = Image.new("RGB", (cols * tw, rows * th), (0, 0, 0))
    cues = ["WEBVTT", ""]
    for i in range(1, 11):
        t = (i - 1) * 2
        img = draw_frame(320, 180, "sprite-storyboard / forest", i, 10, t,
                         0.30)
        save_jpeg(img, folder / f"Thumbnail{i:06d}.jpg")
        x, y = ((i - 1) % cols) * tw, ((i - 1) // cols) * th
        sheet.paste(scaled(img, tw, th), (x, y))
        cues += [f"{fmt_time(t)} --> {fmt_time(t + 2)}",
                 f"forest_sprite.jpg#xywh={x},{y},{tw},{th}", ""]
    save_jpeg(sheet, folder / "forest_sprite.jpg")
    (folder / "forest_sprite.vtt").write_text("\n".join(cues),
                                              encoding="utf-8", newline="\n")
    video_set(folder, "forest",
              [("forest_1280x720_2500.mp4", "smptehdbars", 20)])


def no_thumbnails() -> None:
    folder = ROOT / "no-thumbnails"
    video_set(folder, "lake", [("lake_1280x720_2000.mp4", "rgbtestsrc", 16)])


def virtual_folders() -> None:
    folder = ROOT / "virtual-folders"
    for i in range(1, 4):
        t = (i - 1) * 2
        img = draw_frame(256, 144, "virtual-folders / harbour", i, 3, t, 0.62)
        save_png(img, folder / "thumbnails" / f"Thumbnail-harbour-{i:06d}.png")
    video_set(folder, "harbour",
              [("video/harbour_1280x720_3000.mp4", "testsrc2", 20)],
              ismc=False)


def main() -> None:
    builtin_preset()
    multi_rendition()
    sprite_storyboard()
    no_thumbnails()
    virtual_folders()
    for rel, how in sorted(VIDEO_METHODS.items()):
        note = {"ffmpeg": "real H.264 video (ffmpeg/libx264)",
                "kept": "kept existing file (ffmpeg not found)",
                "minimal": "minimal ftyp+free box only (ffmpeg not found)"}
        print(f"{rel}: {note[how]}")
    print(f"samples written under {ROOT}")


if __name__ == "__main__":
    main()
