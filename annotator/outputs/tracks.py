"""The report's section on person tracks (videos, schema 1.3 ``people[].track_id``): how many tracks,
how long (a histogram of frames per track), and a strip of one track's frames, the person cropped
from each, so a reader sees at a glance whether a track follows one person.

Reads only ``source_uri`` and ``people.track_id`` of every part; the strip's frames are read in full.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import numpy as np

from annotator.outputs.html_parts import data_uri, figure, jpeg_bytes, png, table
from annotator.pipeline import sequence
from annotator.pipeline.layout import Output


@dataclass
class Tracks:
    """Frames of each (video, track id): (frame, part, row, person)."""

    members: dict[tuple[str, int], list[tuple[int, int, int, int]]] = field(default_factory=dict)

    def lengths(self) -> list[int]:
        return [len(v) for v in self.members.values()]

    def longest(self) -> tuple[str, int] | None:
        if not self.members:
            return None
        # the longest, then the earliest, then the smallest id (the same strip on every report)
        return min(self.members, key=lambda k: (-len(self.members[k]), min(f for f, *_ in self.members[k]), k))


def collect(output: Output) -> Tracks | None:
    """The tracks of an output, or None when it has no ``track_id`` (written before schema 1.3)."""
    tr = Tracks()
    found = False
    for p, record in enumerate(output.records()):
        f = output.open_part(record)
        people_type = f.schema_arrow.field("people").type.value_type
        if people_type.get_field_index("track_id") < 0:
            continue
        found = True
        has_view = "view" in f.schema_arrow.names  # schema 1.5
        t = f.read(columns=["source_uri", "people.list.element.track_id", *(["view"] if has_view else [])])
        world = t.column("view").to_pylist() if has_view else [None] * t.num_rows
        for r, (uri, ppl) in enumerate(zip(t.column("source_uri").to_pylist(), t.column("people").to_pylist(),
                                           strict=True)):
            if world[r] == "world":  # a rig's fused rows: no image (the rig section shows them)
                continue
            frame = sequence.frame_of(uri)
            for k, person in enumerate(ppl or []):
                tid = person.get("track_id")
                if tid is not None and frame is not None:
                    tr.members.setdefault((uri.partition("#")[0], int(tid)), []).append((frame, p, r, k))
    return tr if found else None


def lengths_png(lengths: list[int]) -> bytes:
    fig = figure()
    ax = fig.add_subplot()
    bins = min(30, max(1, len(set(lengths))))
    ax.hist(lengths, bins=bins, color="tab:purple", edgecolor="white")
    ax.set_xlabel("frames in the track")
    ax.set_ylabel("tracks")
    ax.set_title(f"track lengths (n={len(lengths)})", fontsize=10)
    return png(fig)


def strip_jpeg(output: Output, tracks: Tracks, key: tuple[str, int], skeleton: dict, n: int = 8, height: int = 220,
               storage_options: dict | None = None) -> bytes:
    """Up to ``n`` evenly spaced frames of one track, the person (highlighted) cropped from each."""
    from PIL import Image

    from annotator.outputs import dataset, render
    frames = sorted(tracks.members[key])
    pick = [frames[int(i)] for i in np.unique(np.linspace(0, len(frames) - 1, min(n, len(frames))).round())]
    parts = output.records()
    tiles = []
    for _, p, r, k in pick:
        row = output.read_part(parts[p]).slice(r, 1).to_pylist()[0]
        img = render.overlay(dataset.load_image(row["source_uri"], storage_options), row, skeleton,
                             render.RenderConfig(max_side=0, joint_names=False), highlight=k)
        x, y, w, h = row["people"][k]["box"]
        m = 0.15 * max(w, h)
        crop = img.crop((max(0, int(x - m)), max(0, int(y - m)), min(img.width, int(x + w + m)),
                         min(img.height, int(y + h + m))))
        tiles.append(crop.resize((max(1, round(crop.width * height / max(crop.height, 1))), height)))
    strip = Image.new("RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1), height), (255, 255, 255))
    x = 0
    for t in tiles:
        strip.paste(t, (x, 0))
        x += t.width + 4
    return jpeg_bytes(strip)


def section_html(output: Output, skeleton: dict, storage_options: dict | None = None) -> str:
    """The "Tracks" section (empty string for outputs without tracks)."""
    tracks = collect(output)
    if tracks is None:
        return ""
    e = html.escape
    out = ["<h2>Tracks</h2>"]
    if not tracks.members:
        out.append('<p class="note">no tracked people</p>')
        return "\n".join(out)
    lengths = tracks.lengths()
    videos = {v for v, _ in tracks.members}
    out.append(table([("videos", len(videos)), ("tracks", len(lengths)), ("median frames per track",
                                                                       float(np.median(lengths))),
                       ("longest track (frames)", max(lengths)), ("tracks of one frame", lengths.count(1))]))
    out.append(f'<div class="charts"><img alt="track lengths" src="{data_uri(lengths_png(lengths), "image/png")}">'
               "</div>")
    key = tracks.longest()
    frames = sorted(tracks.members[key])
    out.append(f"<p>The longest track, {e(str(key[1]))} in {e(key[0])}: {len(frames)} frames, "
               f"{frames[0][0]}-{frames[-1][0]}, evenly spaced (the person highlighted):</p>")
    try:
        strip = strip_jpeg(output, tracks, key, skeleton, storage_options=storage_options)
        out.append(f'<div><img alt="frames of track {e(str(key[1]))}" style="max-width:100%" '
                   f'src="{data_uri(strip, "image/jpeg")}"></div>')
    except Exception as err:  # noqa: BLE001 - a moved video is a note, not a broken page
        out.append(f'<div class="missing">frames not readable: {e(str(err))}</div>')
    return "\n".join(out)
