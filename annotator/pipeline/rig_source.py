"""Where a rig's views and calibration are, on any filesystem (a local folder, ``gs://``, ``s3://``,
any fsspec URL): its views and their frame files in natural order, a view's frame count and size
without decoding it all, and the names a plan keeps of them.

Everything takes and gives URIs as ``sources`` does (plain paths for the local disk, ``proto://path``
otherwise) and reaches the store through ``sources.filesystem`` with the job's ``storage_options``.
"""

from __future__ import annotations

import contextlib
import posixpath
import re
from pathlib import Path, PurePosixPath

from annotator.pipeline import sources

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def natural_key(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def is_local(uri: str | Path) -> bool:
    return sources.protocol_of(str(uri)) == "file" and "://" not in str(uri)


def shown(uri: str | Path) -> str:
    """``uri`` as messages say it: a local path as pathlib writes it, any other URI as given."""
    return str(Path(uri)) if is_local(uri) else str(uri)


def name(uri: str | Path) -> str:
    return posixpath.basename(str(uri).rstrip("/"))


def stem(uri: str | Path) -> str:
    return PurePosixPath(name(uri)).stem


def suffix(uri: str | Path) -> str:
    return PurePosixPath(name(uri)).suffix.lower()


def kind(uri: str | Path, storage_options: dict | None = None) -> str | None:
    """"dir", "file", or None where nothing is."""
    fs, path = sources.filesystem(str(uri), storage_options)
    if fs.isdir(path):
        return "dir"
    return "file" if fs.isfile(path) else None


def children(uri: str | Path, storage_options: dict | None = None) -> list[tuple[str, bool]]:
    """(URI, is a folder) of what is directly in the folder ``uri``."""
    fs, path = sources.filesystem(str(uri), storage_options)
    path = path.rstrip("/") or "/"
    out = []
    for info in fs.ls(path, detail=True):
        p = info["name"].rstrip("/")
        if p != path:  # some stores list the folder itself
            out.append((sources.to_uri(fs, p), info.get("type") == "directory"))
    return out


def frame_files(source: str | Path, storage_options: dict | None = None) -> list[str]:
    """The images of a frame folder, in natural order."""
    files = (u for u, is_dir in children(source, storage_options) if not is_dir and suffix(u) in IMAGE_SUFFIXES)
    return sorted(files, key=lambda u: natural_key(name(u)))


def list_sources(root: str | Path, storage_options: dict | None = None) -> list[str]:
    """The rig's views: videos or frame folders in ``root/videos`` (else ``root``), in natural order."""
    videos = sources.join(str(root), "videos")
    vdir = videos if kind(videos, storage_options) == "dir" else str(root)
    return sorted([u for u, is_dir in children(vdir, storage_options)
                   if (not is_dir and suffix(u) in VIDEO_SUFFIXES) or (is_dir and frame_files(u, storage_options))],
                  key=lambda u: natural_key(name(u)))


def open_file(uri: str | Path, storage_options: dict | None = None, block_size: int | None = None):
    """A binary file object of ``uri`` (a context manager)."""
    fs, path = sources.filesystem(str(uri), storage_options)
    return fs.open(path, "rb", **({"block_size": block_size} if block_size else {}))


@contextlib.contextmanager
def open_video(uri: str | Path, storage_options: dict | None = None):
    """The PyAV container of a video (a local one opened by its path, any other through a file object)."""
    import av

    if is_local(uri):
        with av.open(str(uri)) as container:
            yield container
        return
    with open_file(uri, storage_options, block_size=4 * 2**20) as f, av.open(f) as container:
        yield container


def probe(source: str | Path, storage_options: dict | None = None) -> tuple[int, tuple[int, int], float | None]:
    """(frames, (width, height), fps or None) of a video or a frame folder, without decoding it all
    (a video's frames are counted by decoding only where its header does not say)."""
    if kind(source, storage_options) == "dir":
        from PIL import Image

        files = frame_files(source, storage_options)
        with open_file(files[0], storage_options) as f, Image.open(f) as im:
            return len(files), im.size, None
    with open_video(source, storage_options) as container:
        stream = container.streams.video[0]
        frames = int(stream.frames) or sum(1 for _ in container.decode(stream))
        rate = float(stream.average_rate) if stream.average_rate else None
        return frames, (int(stream.width), int(stream.height)), rate


def plan_uri(uri: str) -> str:
    """What a plan keeps of a view's file: the absolute, resolved path of a local one (as plans
    always had it), the URI of any other."""
    return str(Path(uri).resolve()) if is_local(uri) else uri
