"""Input URI -> a plan of shards (deterministic ids, each a list of image members), via fsspec.

A shard is the unit of output and of resume: one Parquet part per shard, committed atomically.
Shard ids depend only on the sorted listing, so the same input always gives the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import fsspec

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".jfif")
DEFAULT_SHARD_SIZE = 256


@dataclass(frozen=True)
class Member:
    image_id: str
    uri: str
    size: int | None = None


@dataclass
class Shard:
    shard_id: str
    members: list[Member] = field(default_factory=list)


@dataclass
class Plan:
    input_uri: str
    shards: list[Shard]

    @property
    def num_images(self) -> int:
        return sum(len(s.members) for s in self.shards)


def _is_image(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def list_folder(uri: str) -> list[Member]:
    """All image files under ``uri`` (recursively), sorted by path, ids relative to the root."""
    fs, root = fsspec.core.url_to_fs(uri)
    root = root.rstrip("/")
    if fs.isfile(root):
        entries = {root: fs.info(root)}
        base = root.rsplit("/", 1)[0]
    else:
        entries = fs.find(root, detail=True)
        base = root
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    members = []
    for path in sorted(entries):
        if not _is_image(path):
            continue
        rel = path[len(base):].lstrip("/")
        full = path if protocol == "file" else f"{protocol}://{path}"
        members.append(Member(image_id=rel, uri=full, size=entries[path].get("size")))
    return members


def plan_folder(uri: str, shard_size: int = DEFAULT_SHARD_SIZE) -> Plan:
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    members = list_folder(uri)
    if not members:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {uri}")
    shards = [Shard(f"{i // shard_size:06d}", members[i:i + shard_size])
              for i in range(0, len(members), shard_size)]
    return Plan(uri, shards)


def read_bytes(uri: str) -> bytes:
    with fsspec.open(uri, "rb") as f:
        return f.read()
