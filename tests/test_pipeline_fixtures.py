"""Shared helpers for the pipeline tests (imported by tests/test_pipeline*.py, test_storage*.py,
test_resume*.py): small real photos, test-sized job specs, reading an output back.

Small images keep inference fast on 2 CPU cores; they are real photos of a person (the Pose2Sim
sample frames, downscaled, some mirrored or cropped), so the model finds people in them.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
BASE = ["pose2sim_cam01_f030.jpg", "pose2sim_cam02_f030.jpg", "pose2sim_cam03_f030.jpg", "pose2sim_cam04_f030.jpg"]
VIDEO = SAMPLES / "pose2sim" / "Demo_SinglePerson" / "videos" / "cam01.mp4"


def small_photo(i: int) -> Image.Image:
    """The i-th test photo: one of 4 frames, scaled to ~160x288, mirrored and/or cropped by i."""
    im = Image.open(SAMPLES / "images" / BASE[i % 4]).convert("RGB")
    im = im.resize((im.width * 3 // 20, im.height * 3 // 20))
    if (i // 4) % 2:
        im = ImageOps.mirror(im)
    crop = (i // 8) % 4 * 4
    return im.crop((0, crop, im.width, im.height)) if crop else im


def photo_bytes(i: int, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    small_photo(i).save(buf, format=fmt, quality=90)
    return buf.getvalue()


def write_photos(folder: Path, n: int, prefix: str = "img") -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        name = f"{prefix}{i:03d}.jpg"
        (folder / name).write_bytes(photo_bytes(i))
        names.append(name)
    return names


def test_spec(input: str, output: str, **overrides):
    """A job spec sized for the 2-core test machine and the session Ray (4 logical CPUs)."""
    from annotator import spec as spec_mod

    compute = {"actors": 1, "cpus_per_actor": 0.5, "decode_cpus": 0.5, "read_cpus": 0.25, "batch_size": 2,
               "read_batch": 4, "no_progress_timeout_s": 240.0, "shard_attempts": 2, "commit_threads": 2,
               **overrides.pop("compute", {})}
    data = {"input": input, "output": output, "shard_size": 4, "progress": False, "compute": compute,
            "settings": {"num_aug": 1, **overrides.pop("settings", {})}, **overrides}
    return spec_mod.from_dict(data)


test_spec.__test__ = False  # a helper, not a test


def by_id(table) -> dict:
    return {r["image_id"]: r for r in table.to_pylist()}


IMAGE_KEYS = ("source_uri", "shard", "width", "height", "status", "error", "camera_source", "num_people",
              "intrinsics")


def assert_same_labels(got: dict, ref: dict, atol: dict[str, float], rtol: float = 1e-7) -> None:
    """Two outputs (``by_id`` rows) label the same images alike: the same ids, equal image fields, and
    per person each field of ``atol`` within its tolerance (runs batch differently, which changes the
    last bits of the model's float arithmetic)."""
    assert sorted(got) == sorted(ref)
    for image_id, r in ref.items():
        g = got[image_id]
        for key in IMAGE_KEYS:
            assert g[key] == r[key], (image_id, key)
        for pg, pr in zip(g["people"], r["people"], strict=True):
            for key, tol in atol.items():
                np.testing.assert_allclose(pg[key], pr[key], rtol=rtol, atol=tol)


def camera_json(f: float, cx: float, cy: float, ext: np.ndarray | None = None) -> bytes:
    import json

    doc = {"intrinsics": [[f, 0, cx], [0, f, cy], [0, 0, 1]], "distortion": [0.0, 0.0, 0.0, 0.0, 0.0]}
    if ext is not None:
        doc["extrinsics"] = ext.tolist()
    return json.dumps(doc).encode()
