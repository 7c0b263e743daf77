#!/usr/bin/env python3
"""Seeds a local Azurite blob service with the bundled sample assets (samples/*/).

Every sample folder becomes a container `asset-<GUID>`, as Azure Media Services named them,
with one blob per file (sub-folders become virtual folders: `thumbnails/Thumbnail-...png`) and a
content type from the file's extension. The GUID of a sample is fixed: uuid5 of its folder name
under a constant namespace, the same on every run and every machine.

Requests are authenticated with an ACCOUNT SAS signed with the well-known Azurite key (public,
published with the Azure Storage emulators; never a real account's key). Optionally writes a
catalog CSV (name,alternateId,assetId,container,storageAccount) so that the service's catalog
mode can find the samples by name, alternate id or GUID.

Python 3.11 standard library only.

    scripts/seed-azurite.py [--endpoint URL] [--samples DIR] [--catalog PATH] [--wait SECONDS]
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime as dt
import hashlib
import hmac
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

# The well-known Azurite development account and its key: public and documented for the Azure
# Storage emulators (Azurite, the legacy Storage Emulator). Only ever valid against an emulator.
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
DEFAULT_ENDPOINT = f"http://127.0.0.1:10000/{ACCOUNT}"

# Namespace of the sample GUIDs: uuid5(SAMPLE_NAMESPACE, folder name).
SAMPLE_NAMESPACE = uuid.UUID("6f1f3c2e-8a4b-5d7e-9c0a-1b2d3e4f5a6b")

# Account SAS, signed version 2020-12-06 and later (same values as tests/it/support/seed.rs).
SAS_VERSION = "2025-11-05"
SAS_SERVICES = "b"  # blob
SAS_RESOURCE_TYPES = "sco"  # service, container, object
SAS_PERMISSIONS = "racwdl"
SAS_PROTOCOLS = "https,http"

CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".bmp": "image/bmp",
    ".vtt": "text/vtt",
    ".mp4": "video/mp4",
    ".json": "application/json",
    # Smooth Streaming server/client manifests (XML); AMS stored them as octet-stream.
    ".ism": "application/octet-stream",
    ".ismc": "application/octet-stream",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"


def sample_guid(name: str) -> str:
    """The fixed GUID of the sample folder `name` (lower-case, hyphenated)."""
    return str(uuid.uuid5(SAMPLE_NAMESPACE, name))


def account_sas_string_to_sign(
    account: str,
    permissions: str,
    services: str,
    resource_types: str,
    start: str,
    expiry: str,
    ip: str,
    protocols: str,
    version: str,
    encryption_scope: str,
) -> str:
    """Ten fields, each followed by `\\n` (sv 2020-12-06+):
    account, sp, ss, srt, st, se, sip, spr, sv, ses."""
    fields = [
        account,
        permissions,
        services,
        resource_types,
        start,
        expiry,
        ip,
        protocols,
        version,
        encryption_scope,
    ]
    return "".join(f + "\n" for f in fields)


def sign(key_b64: str, string_to_sign: str) -> str:
    """base64(HMAC-SHA256(base64decode(key), utf8(string_to_sign)))."""
    mac = hmac.new(base64.b64decode(key_b64), string_to_sign.encode("utf-8"), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def sas_time(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def account_sas(account: str, key_b64: str, expiry: dt.datetime) -> str:
    """An account SAS query string (no leading `?`)."""
    se = sas_time(expiry)
    to_sign = account_sas_string_to_sign(
        account,
        SAS_PERMISSIONS,
        SAS_SERVICES,
        SAS_RESOURCE_TYPES,
        "",
        se,
        "",
        SAS_PROTOCOLS,
        SAS_VERSION,
        "",
    )
    return urllib.parse.urlencode(
        [
            ("sv", SAS_VERSION),
            ("ss", SAS_SERVICES),
            ("srt", SAS_RESOURCE_TYPES),
            ("sp", SAS_PERMISSIONS),
            ("se", se),
            ("spr", SAS_PROTOCOLS),
            ("sig", sign(key_b64, to_sign)),
        ]
    )


def encode_blob_name(name: str) -> str:
    """Percent-encodes each `/`-separated segment (all but RFC 3986 unreserved), keeping `/`."""
    return "/".join(urllib.parse.quote(segment, safe="") for segment in name.split("/"))


class Seeder:
    def __init__(self, endpoint: str, account: str, key: str) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.sas = account_sas(
            account, key, dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
        )

    def _send(self, method: str, url: str, body: bytes, headers: dict[str, str]) -> int:
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
                return response.status
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")
            e.detail = detail  # type: ignore[attr-defined]
            raise

    def create_container(self, container: str) -> bool:
        """Creates the container; False when it already exists (a re-seed)."""
        url = f"{self.endpoint}/{container}?restype=container&{self.sas}"
        try:
            self._send("PUT", url, b"", {"Content-Length": "0"})
            return True
        except urllib.error.HTTPError as e:
            if e.code == 409 and "ContainerAlreadyExists" in getattr(e, "detail", ""):
                return False
            raise SystemExit(
                f"seed-azurite: Create Container {container} failed: {e.code}\n"
                f"{getattr(e, 'detail', '')}"
            )

    def put_blob(self, container: str, name: str, data: bytes, content_type: str) -> None:
        url = f"{self.endpoint}/{container}/{encode_blob_name(name)}?{self.sas}"
        headers = {
            "x-ms-blob-type": "BlockBlob",
            "Content-Type": content_type,
            "Content-Length": str(len(data)),
        }
        try:
            self._send("PUT", url, data, headers)
        except urllib.error.HTTPError as e:
            raise SystemExit(
                f"seed-azurite: Put Blob {container}/{name} failed: {e.code}\n"
                f"{getattr(e, 'detail', '')}"
            )


def wait_until_up(endpoint: str, seconds: float) -> None:
    """Waits until the blob service answers any HTTP status (Azurite answers `GET /` with 400)."""
    parts = urllib.parse.urlsplit(endpoint)
    root = f"{parts.scheme}://{parts.netloc}/"
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(root, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # an HTTP answer, whatever its status: the service is up
        except (urllib.error.URLError, OSError) as e:
            if time.monotonic() >= deadline:
                raise SystemExit(f"seed-azurite: {root} did not answer within {seconds:g} s ({e})")
            time.sleep(0.2)


def sample_folders(root: Path) -> list[Path]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise SystemExit(f"seed-azurite: no sample folders under {root}")
    return folders


def main() -> int:
    repo = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(
        description="Seed Azurite with the bundled samples as AMS-style asset containers.",
    )
    parser.add_argument(
        "--endpoint",
        default=DEFAULT_ENDPOINT,
        help=f"blob service endpoint, path-style with the account (default {DEFAULT_ENDPOINT})",
    )
    parser.add_argument(
        "--samples",
        type=Path,
        default=repo / "samples",
        help="folder with one sub-folder per sample asset (default: the repo's samples/)",
    )
    parser.add_argument(
        "--catalog",
        type=Path,
        help="write a catalog CSV (name,alternateId,assetId,container,storageAccount) here",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0,
        metavar="SECONDS",
        help="wait up to this long for the endpoint to answer first (default 0: no wait)",
    )
    args = parser.parse_args()

    if args.wait > 0:
        wait_until_up(args.endpoint, args.wait)
    seeder = Seeder(args.endpoint, ACCOUNT, KEY)
    rows = []
    print(f"{'assetId (GUID)':<38} {'container':<44} {'sample':<18} blobs")
    for folder in sample_folders(args.samples):
        guid = sample_guid(folder.name)
        container = f"asset-{guid}"
        created = seeder.create_container(container)
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        for path in files:
            name = path.relative_to(folder).as_posix()
            content_type = CONTENT_TYPES.get(path.suffix.lower(), DEFAULT_CONTENT_TYPE)
            seeder.put_blob(container, name, path.read_bytes(), content_type)
        note = "" if created else " (container existed; blobs overwritten)"
        print(f"{guid:<38} {container:<44} {folder.name:<18} {len(files)}{note}")
        rows.append(
            {
                "name": folder.name,
                "alternateId": f"cms-{folder.name}",
                "assetId": guid,
                "container": container,
                "storageAccount": ACCOUNT,
            }
        )

    if args.catalog:
        args.catalog.parent.mkdir(parents=True, exist_ok=True)
        with args.catalog.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(
                f,
                fieldnames=["name", "alternateId", "assetId", "container", "storageAccount"],
                lineterminator="\n",
            )
            writer.writeheader()
            writer.writerows(rows)
        print(f"catalog: {args.catalog} ({len(rows)} assets: by name, alternateId cms-<name>, or GUID)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
