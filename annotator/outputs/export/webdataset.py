"""``--format webdataset``: one tar per source part, ``<shard>.tar``, with per sample ``<key>.jpg``
(or ``.png``/``.webp``: the original bytes where any decoder shows them as the job saw them) and
``<key>.json`` (the labels: ``samples.row_json``): the img2dataset / WebDataset convention, so
``webdataset.WebDataset("DEST/{000000..000011}.tar").decode("rgb8")`` yields (image, labels).

Tars are deterministic (sorted samples, fixed member headers), so a rerun writes the same bytes.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from annotator.outputs.export import samples
from annotator.outputs.export.config import PartTask
from annotator.pipeline.layout import Output
from annotator.pipeline.sink import CommitSink

IMAGE_THREADS = 8  # images of a part read concurrently (remote storage is latency-bound)


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """One member with fixed metadata (mtime 0, root, 0644): the same content gives the same tar."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def write_tar(f, members: Iterable[tuple[str, bytes]]) -> None:
    with tarfile.open(fileobj=f, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            add(tar, name, data)


def prefetched(pool: ThreadPoolExecutor, fn, items: list, window: int = 4 * IMAGE_THREADS):
    """``(item, fn(item))`` in order, at most ``window`` computed ahead (bounded memory)."""
    for start in range(0, len(items), window):
        chunk = items[start:start + window]
        yield from zip(chunk, pool.map(fn, chunk), strict=True)


def read_selected(task: PartTask) -> list[samples.Selected]:
    src = Output(task.source, task.config.storage_options)
    table = src.read_part(task.record)
    return samples.select(table, task.shard, task.config.filters, task.joint_names)


def write_part(task: PartTask, out: CommitSink) -> dict:
    selected = read_selected(task)
    so, quality = task.config.storage_options, task.config.jpeg_quality
    counts: dict = {"fingerprint": task.fingerprint, "source_sha256": task.record.get("sha256"),
                    "rows_in": int(task.record.get("rows", 0)), "samples": 0, "people": 0, "skipped": {}}
    skipped: Counter = Counter()

    def image(sel: samples.Selected):
        if sel.data["status"] != "ok":
            return None  # error rows: labels only (why it failed)
        return samples.image_or_reason(lambda: samples.image_file(sel.data, so, quality))

    def members():
        with ThreadPoolExecutor(IMAGE_THREADS) as pool:
            for sel, img in prefetched(pool, image, selected):
                if isinstance(img, str):
                    skipped[img] += 1
                    continue
                labels = samples.row_json(sel)
                if img is not None:
                    ext, data, how = img
                    labels["image"] = how
                    yield f"{sel.key}.{ext}", data
                yield f"{sel.key}.json", json.dumps(labels, separators=(",", ":")).encode()
                counts["samples"] += 1
                counts["people"] += len(sel.people)
        counts["skipped"] = dict(sorted(skipped.items()))

    return out.write_file(task.shard, f"{task.shard}.tar", lambda f: write_tar(f, members()), counts)
