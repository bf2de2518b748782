"""An image's camera (intrinsics, distortion, extrinsics, where it came from) and its one set of
conversions: JSON (sidecars, calibration files, the plan's shard table), flat lists (the plan's
member table, the label row) and batch columns (between the stages).

Why one module: a camera passes through all of these between the listing and the label row, and
one copy of a conversion that disagreed with the others would give rows the wrong camera without
an error. In batch columns the shapes are fixed (intrinsics [N,3,3], distortion [N,12] zero-padded,
extrinsics [N,4,4]) and NaN intrinsics or extrinsics mean "not given".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

MAX_DISTORTION = 12  # the 12-coefficient lens model (OpenCV order)


@dataclass
class Camera:
    """Intrinsics (3x3), distortion (OpenCV order), extrinsics (4x4 world->camera or None)."""

    intrinsics: np.ndarray
    source: str
    distortion: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    extrinsics: np.ndarray | None = None


# ---------------------------------------------------------------------------------------------
# JSON


def from_json(obj: dict | str | bytes, source: str | None = "sidecar") -> Camera:
    """A camera from sidecar / calibration JSON (``source``: where it came from; None takes the
    ``source`` that ``to_json`` wrote into the document).

    Keys (official MeTRAbs argument names are accepted as aliases): ``intrinsics`` | ``K`` |
    ``intrinsic_matrix`` (3x3 or 9 values, pixels); ``distortion`` | ``dist`` |
    ``distortion_coeffs`` (OpenCV order); ``extrinsics`` | ``extrinsic_matrix`` (4x4, 3x4 or 16
    values, world->camera, millimetres) or ``R`` (3x3) with ``t`` (3, millimetres).
    Raises ``ValueError`` with the reason when the JSON does not describe a camera.
    """
    if isinstance(obj, bytes | str):
        obj = json.loads(obj)
    if not isinstance(obj, dict):
        raise ValueError("camera JSON must be an object")

    def pick(*names):
        for n in names:
            if obj.get(n) is not None:
                return obj[n]
        return None

    k = pick("intrinsics", "K", "intrinsic_matrix")
    if k is None:
        raise ValueError("camera JSON has no intrinsics (keys: intrinsics, K or intrinsic_matrix)")
    k = np.asarray(k, np.float32).reshape(3, 3)
    dist = pick("distortion", "dist", "distortion_coeffs")
    dist = np.zeros(0, np.float32) if dist is None else np.asarray(dist, np.float32).ravel()
    ext = pick("extrinsics", "extrinsic_matrix")
    if ext is not None:
        ext = np.asarray(ext, np.float32).ravel()
        if ext.size == 12:
            ext = np.concatenate([ext, np.array([0, 0, 0, 1], np.float32)])
        ext = ext.reshape(4, 4)
    elif obj.get("R") is not None:
        ext = np.eye(4, dtype=np.float32)
        ext[:3, :3] = np.asarray(obj["R"], np.float32).reshape(3, 3)
        ext[:3, 3] = np.asarray(obj.get("t", [0, 0, 0]), np.float32).ravel()
    if not (np.isfinite(k).all() and np.isfinite(dist).all() and (ext is None or np.isfinite(ext).all())):
        raise ValueError("camera JSON has non-finite values")
    return Camera(k, (obj.get("source") or "given") if source is None else source, dist, ext)


def to_json(cam: Camera | None) -> str | None:
    """The plan's shard-table form (flat lists and the source); ``from_json(doc, None)`` reads it."""
    if cam is None:
        return None
    k, d, x, s = to_lists(cam)
    return json.dumps({"intrinsics": k, "distortion": d, "extrinsics": x, "source": s})


# ---------------------------------------------------------------------------------------------
# Flat lists (plan members, label rows)


def to_lists(cam: Camera | None) -> tuple[list | None, list | None, list | None, str | None]:
    """(intrinsics [9], distortion [D], extrinsics [16] or None, source); all None without a camera."""
    if cam is None:
        return None, None, None, None
    return (np.asarray(cam.intrinsics, np.float32).ravel().tolist(),
            np.asarray(cam.distortion, np.float32).ravel().tolist(),
            None if cam.extrinsics is None else np.asarray(cam.extrinsics, np.float32).ravel().tolist(),
            cam.source)


def from_lists(k, d, x, source: str | None) -> Camera | None:
    """The inverse of ``to_lists`` (None without intrinsics; a missing source reads "given")."""
    if k is None:
        return None
    return Camera(np.asarray(k, np.float32).reshape(3, 3), source or "given",
                  np.asarray(d if d is not None else [], np.float32),
                  None if x is None else np.asarray(x, np.float32).reshape(4, 4))


# ---------------------------------------------------------------------------------------------
# Batch columns (between the stages)

COLUMNS = ("intrinsics", "distortion", "extrinsics", "camera_source")


def columns(n: int) -> dict[str, np.ndarray]:
    """Batch columns for ``n`` rows without a camera."""
    return {"intrinsics": np.full((n, 3, 3), np.nan, np.float32),
            "distortion": np.zeros((n, MAX_DISTORTION), np.float32),
            "extrinsics": np.full((n, 4, 4), np.nan, np.float32),
            "camera_source": np.full(n, "", dtype=object)}


def put(cols: dict, i: int, cam: Camera | None) -> None:
    """Write ``cam`` into row ``i`` of ``cols`` (made by ``columns``); None leaves "not given"."""
    if cam is None:
        return
    cols["intrinsics"][i] = np.asarray(cam.intrinsics, np.float32).reshape(3, 3)
    d = np.asarray(cam.distortion, np.float32).ravel()[:MAX_DISTORTION]
    cols["distortion"][i, :len(d)] = d
    if cam.extrinsics is not None:
        cols["extrinsics"][i] = np.asarray(cam.extrinsics, np.float32).reshape(4, 4)
    cols["camera_source"][i] = cam.source


def take(cols: dict, i: int) -> Camera | None:
    """Row ``i``'s camera, or None where its intrinsics are not given (the padding of the
    distortion is trimmed again: trailing zeros are no coefficients)."""
    k = np.asarray(cols["intrinsics"][i], np.float32).reshape(3, 3)
    if not np.isfinite(k).all():
        return None
    d = np.asarray(cols["distortion"][i], np.float32).ravel()
    nz = np.flatnonzero(d)
    x = np.asarray(cols["extrinsics"][i], np.float32).reshape(4, 4)
    return Camera(k, str(cols["camera_source"][i]) or "given", d[: nz[-1] + 1] if len(nz) else d[:0],
                  x if np.isfinite(x).all() else None)
