"""A calibrated multi-view scene's triangulation, written as a motion-capture dataset.

Why: ``annotator eval mocap`` should be checkable on data in this repository. The bundled
Pose2Sim clips have no motion capture, but ``annotator eval multiview`` triangulates their people;
written in the ``eval mocap`` format (one row per person, view and frame, the view's frame as a
lossless PNG, its calibration, the triangulated joints in the world frame), the same predictions
scored by the two commands must give the same numbers. It is also a template for converting a
studio's own capture.

Duck-typed on purpose (views with ``name`` and ``camera``, references with ``frame``, ``person``,
``joints``, ``valid``): ``annotator.eval.multiview`` calls this module, so it cannot import that one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from annotator.eval import joint_names, mocap_data


def export_triangulation(folder: str | Path, views: list, frames: dict[str, dict[int, np.ndarray]], refs: list,
                         names: list[str], skeleton: str = "", world_up=None, floor_height_mm: float | None = None,
                         sequence: str = "") -> Path:
    """Write ``folder/mocap.parquet`` and ``folder/images/VIEW/FRAME.png``: every reference person
    of every frame once per view (``camera`` = the view's name), joints not triangulated as NaN.
    ``names`` are the reference's joint names in the model's ``skeleton`` (written canonical, so
    an ambiguous name keeps its meaning). Returns the dataset file."""
    from PIL import Image

    folder = Path(folder)
    rows: dict[str, list] = {k: [] for k in ("image", "K", "distortion", "extrinsics", "joints3d", "person",
                                             "camera", "sequence")}
    written: set[str] = set()
    for ref in refs:
        joints = np.where(np.asarray(ref.valid)[:, None], ref.joints, np.nan)
        for view in views:
            image = f"images/{view.name}/{ref.frame:06d}.png"
            if image not in written:
                (folder / image).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(frames[view.name][ref.frame]).save(folder / image)
                written.add(image)
            cam = view.camera
            for key, value in (("image", image), ("K", cam.intrinsics), ("distortion", cam.distortion),
                               ("extrinsics", cam.extrinsics), ("joints3d", joints), ("person", int(ref.person)),
                               ("camera", view.name), ("sequence", sequence)):
                rows[key].append(value)
    if not rows["image"]:
        raise ValueError("nothing to export: no person was triangulated")
    return mocap_data.write(folder / "mocap.parquet", rows["image"], np.stack(rows["K"]), np.stack(rows["joints3d"]),
                            names=joint_names.canonical(names, skeleton), frame="world",
                            distortion=_same_width(rows["distortion"]), extrinsics=np.stack(rows["extrinsics"]),
                            world_up=world_up, floor_height_mm=floor_height_mm, person=rows["person"],
                            camera=rows["camera"], sequence=rows["sequence"])


def _same_width(vectors: list[np.ndarray]) -> np.ndarray:
    """Distortion vectors zero-padded to one length OpenCV accepts (more zero terms change nothing)."""
    width = min(n for n in mocap_data.DISTORTION_LENGTHS if n >= max(len(v) for v in vectors))
    out = np.zeros((len(vectors), width))
    for i, v in enumerate(vectors):
        out[i, :len(v)] = v
    return out
