"""``--format coco``: COCO keypoints JSON (``DEST/person_keypoints.json``) for 2D tools and
``pycocotools``: the 17 COCO body joints taken by name from the output's skeleton, boxes, numeric
ids, one category (person).

- ``images[].id`` = 1 + the row's place in the source (rows of the parts before it + its row), and
  ``annotations[].id`` = 1 + the person's place among the source's people: stable under filters
  and reruns (filtered ones leave gaps). ``file_name`` is the ``image_id`` (the path relative to
  the labelled folder), ``source_uri`` where the bytes are, ``key`` the WebDataset key.
- ``keypoints``: x, y, v per joint; v = 2 inside the image with joint confidence >= 0.5 (or none
  given), 1 inside with lower confidence, 0 (and x = y = 0) outside the image.
- ``bbox`` x, y, w, h and ``area`` = w * h (the detector's box); ``score`` and ``quality`` are kept.
- error rows are never exported here (no image).

Each source part becomes a committed ``_coco/part-<shard>.json``; the job's end streams them into
the one JSON file (written aside, then moved: whole or not at all).
"""

from __future__ import annotations

import json
import time

import numpy as np

from annotator import __version__
from annotator.outputs.export import samples
from annotator.outputs.export.config import PartTask
from annotator.pipeline.layout import Output
from annotator.pipeline.sink import CommitSink

FILE = "person_keypoints.json"
PARTS = "_coco"
JOINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
          "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
          "right_knee", "left_ankle", "right_ankle")
SHORT = {"nose": "nose", "left_eye": "leye", "right_eye": "reye", "left_ear": "lear", "right_ear": "rear",
         "left_shoulder": "lsho", "right_shoulder": "rsho", "left_elbow": "lelb", "right_elbow": "relb",
         "left_wrist": "lwri", "right_wrist": "rwri", "left_hip": "lhip", "right_hip": "rhip",
         "left_knee": "lkne", "right_knee": "rkne", "left_ankle": "lank", "right_ankle": "rank"}
SKELETON = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9],
            [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7]]  # COCO's, 1-based
CATEGORY = {"id": 1, "name": "person", "supercategory": "person", "keypoints": list(JOINTS), "skeleton": SKELETON}
VISIBLE = 0.5


def joint_indices(joint_names: list[str]) -> list[int]:
    """Where each COCO joint is in the output's skeleton (full names or MeTRAbs' short ones)."""
    index = {n: i for i, n in enumerate(joint_names)}
    missing = [j for j in JOINTS if j not in index and SHORT[j] not in index]
    if missing:
        raise ValueError(f"the output's skeleton has no {', '.join(missing)}: COCO keypoints need all 17 body joints "
                         "(label with a skeleton that has them, e.g. the default)")
    return [index[j] if j in index else index[SHORT[j]] for j in JOINTS]


def keypoints(person: dict, idx: list[int], width: int, height: int) -> tuple[list[float], int]:
    xy = np.asarray(person["joints2d"], np.float64)[idx]
    conf = person.get("joint_confidences")
    conf = np.asarray(conf, np.float64)[idx] if conf is not None else np.ones(len(idx))
    inside = (xy[:, 0] >= 0) & (xy[:, 0] <= width - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= height - 1)
    v = np.where(inside, np.where(conf >= VISIBLE, 2, 1), 0)
    xy = np.where(inside[:, None], np.round(xy, 2), 0.0)
    flat = np.concatenate([xy, v[:, None]], axis=1).ravel().tolist()
    return [int(x) if i % 3 == 2 else x for i, x in enumerate(flat)], int((v > 0).sum())


def part_json(task: PartTask) -> tuple[dict, dict]:
    """(``{"images", "annotations"}`` of one part, counts)."""
    src = Output(task.source, task.config.storage_options)
    table = src.read_part(task.record)
    idx = joint_indices(task.joint_names)
    people_before = np.concatenate([[0], np.cumsum(table.column("num_people").to_numpy(zero_copy_only=False))])
    images, annotations = [], []
    for sel in samples.select(table, task.shard, task.config.filters, task.joint_names):
        r = sel.data
        if r["status"] != "ok":
            continue
        image_id = task.image_offset + sel.row + 1
        images.append({"id": image_id, "file_name": r["image_id"], "width": r["width"], "height": r["height"],
                       "source_uri": r["source_uri"], "key": sel.key})
        for k in sel.people:
            p = r["people"][k]
            kps, n = keypoints(p, idx, r["width"], r["height"])
            x, y, w, h = (round(float(v), 2) for v in p["box"])
            annotations.append({
                "id": task.person_offset + int(people_before[sel.row]) + k + 1, "image_id": image_id,
                "category_id": 1, "bbox": [x, y, w, h], "area": round(w * h, 2), "iscrowd": 0,
                "keypoints": kps, "num_keypoints": n, "score": round(float(p["score"]), 4),
                "quality": None if p.get("quality") is None else round(float(p["quality"]), 4)})
    counts = {"fingerprint": task.fingerprint, "source_sha256": task.record.get("sha256"),
              "rows_in": int(task.record.get("rows", 0)), "samples": len(images), "people": len(annotations),
              "skipped": {}}
    return {"images": images, "annotations": annotations}, counts


def write_part(task: PartTask, out: CommitSink) -> dict:
    doc, counts = part_json(task)
    data = json.dumps(doc, separators=(",", ":")).encode()
    return out.write_file(task.shard, f"{PARTS}/part-{task.shard}.json", data, counts)


def merge(out: CommitSink, records: list[dict], info: dict) -> str:
    """Stream the committed parts into ``FILE`` (each part read twice: images, then annotations)."""
    def content(f):
        head = {"info": {"description": "annotator 3D pose labels as COCO keypoints (2D)", "version": __version__,
                         "date_created": time.strftime("%Y-%m-%d"), **info},
                "licenses": [], "categories": [CATEGORY]}
        f.write(json.dumps(head, separators=(",", ":"))[:-1].encode())
        for key in ("images", "annotations"):
            f.write(f',"{key}":['.encode())
            first = True
            for r in records:
                items = json.loads(out.fs.cat_file(out.path(r["part"])))[key]
                for item in items:
                    f.write((b"" if first else b",") + json.dumps(item, separators=(",", ":")).encode())
                    first = False
            f.write(b"]")
        f.write(b"}")

    src, _, _ = out.put(FILE, content)
    out.publish(src, FILE)
    return f"{out.uri.rstrip('/')}/{FILE}"
