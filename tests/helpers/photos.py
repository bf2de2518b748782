"""Small real photos and camera files as job inputs.

Small images keep inference fast on 2 CPU cores; they are real photos of a person (the Pose2Sim
sample frames, downscaled, some mirrored or cropped), so the model finds people in them.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
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


def camera_json(f: float, cx: float, cy: float, ext: np.ndarray | None = None) -> bytes:
    doc = {"intrinsics": [[f, 0, cx], [0, f, cy], [0, 0, 1]], "distortion": [0.0, 0.0, 0.0, 0.0, 0.0]}
    if ext is not None:
        doc["extrinsics"] = ext.tolist()
    return json.dumps(doc).encode()


def tar_bytes(samples: list[tuple[str, dict[str, bytes]]]) -> bytes:
    """A WebDataset tar: ``(key, {ext: bytes})`` per sample, members ``key.ext`` in this order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for key, files in samples:
            for ext, data in files.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_tar(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> None:
    path.write_bytes(tar_bytes(samples))
