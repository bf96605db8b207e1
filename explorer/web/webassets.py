"""The JavaScript libraries bertviz's views need (d3 5.7.0, jQuery 2.2.4), fetched once at set-up
from the npm registry, checked against the registry's sha512, and kept inside the virtual environment.

bertviz itself loads them from a CDN at view time, which draws nothing offline; the app serves them
inline instead. `python -m explorer.web.webassets` fetches them (`make setup` runs it).
"""

from __future__ import annotations

import base64
import hashlib
import io
import sys
import tarfile
import urllib.request
from functools import lru_cache
from pathlib import Path

REGISTRY = "https://registry.npmjs.org"
# name -> (version, file inside the package, npm's sha512 integrity of the tarball)
LIBRARIES = {
    "d3": (
        "5.7.0",
        "package/dist/d3.min.js",
        "8KEIfx+dFm8PlbJN9PI0suazrZ41QcaAufsKE9PRcqYPWLngHIyWJZX96n6IQKePGgeSu0l7rtlueSSNq8Zc3g==",
    ),
    "jquery": (
        "2.2.4",
        "package/dist/jquery.min.js",
        "lBHj60ezci2u1v2FqnZIraShGgEXq35qCzMv4lITyHGppTnA13rwR0MgwyNJh9TnDs3aXUvd1xjAotfraMHX/Q==",
    ),
}


def asset_dir() -> Path:
    return Path(sys.prefix) / "share" / "transformer-explorer" / "js"


def asset_path(name: str) -> Path:
    version = LIBRARIES[name][0]
    return asset_dir() / f"{name}-{version}.min.js"


def missing() -> list[str]:
    return [name for name in LIBRARIES if not asset_path(name).is_file()]


@lru_cache(maxsize=None)  # the files do not change once fetched; the page reads them on every draw
def read(name: str) -> str:
    return asset_path(name).read_text(encoding="utf-8")


def fetch(name: str, timeout: float = 20.0) -> Path:
    """Downloads one library's npm tarball, checks its sha512, and writes its minified file."""
    version, member, integrity = LIBRARIES[name]
    url = f"{REGISTRY}/{name}/-/{name}-{version}.tgz"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        data = response.read()
    digest = base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")
    if digest != integrity:
        raise RuntimeError(f"{url}: sha512 {digest} does not match the pinned {integrity}")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        text = tar.extractfile(member).read()
    target = asset_path(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    tmp.write_bytes(text)
    tmp.replace(target)
    return target


def main() -> int:
    for name in missing():
        print(f"Fetching {name} {LIBRARIES[name][0]} from the npm registry for the bertviz views")
        try:
            fetch(name)
        except (OSError, RuntimeError) as err:
            print(f"error: {name}: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
