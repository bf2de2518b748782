"""The pipeline's stage functions on columnar batches (dict of numpy arrays, Ray Data's "numpy"
format): read -> decode -> infer -> encode. Runners (local, Ray Data, Beam) only wire these.

Columns after ``read_decode``: image_id, source_uri, shard (str); image (uint8 HxWx3, a 1x1
placeholder for error rows); width, height (int32, -1 when unknown); intrinsics [N,3,3];
distortion [N,12] (zero-padded OpenCV order); extrinsics [N,4,4] (NaN when unknown);
camera_source (str); error (str, '' when ok); read_seconds, decode_seconds (float).
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from annotator import decode as decode_mod
from annotator import encode, sources
from annotator.infer import ImageInput, InferenceSettings, PoseInference

MAX_DISTORTION = 12


def _member_camera(row: dict) -> decode_mod.Camera | None:
    """Camera given with the input (sidecar/manifest), or None to use EXIF / the default FOV."""
    k = row.get("intrinsics")
    if k is None or (isinstance(k, np.ndarray) and not np.isfinite(k).all()):
        return None
    dist = row.get("distortion")
    ext = row.get("extrinsics")
    return decode_mod.Camera(
        np.asarray(k, np.float32).reshape(3, 3), row.get("camera_source") or "given",
        np.zeros(0, np.float32) if dist is None else np.asarray(dist, np.float32).ravel(),
        None if ext is None or not np.isfinite(ext).all() else np.asarray(ext, np.float32).reshape(4, 4))


def read_decode(batch: dict, max_pixels: int = decode_mod.DEFAULT_MAX_PIXELS,
                default_fov_degrees: float = decode_mod.DEFAULT_FOV_DEGREES) -> dict:
    """Read each member's bytes and decode them. Failures become rows with ``error`` set."""
    n = len(batch["image_id"])
    images, widths, heights, errors, cam_src = [], [], [], [], []
    ks = np.full((n, 3, 3), np.nan, np.float32)
    dists = np.zeros((n, MAX_DISTORTION), np.float32)
    exts = np.full((n, 4, 4), np.nan, np.float32)
    read_s = np.zeros(n, np.float64)
    decode_s = np.zeros(n, np.float64)
    for i in range(n):
        row = {k: v[i] for k, v in batch.items()}
        t0 = time.perf_counter()
        try:
            data = sources.read_bytes(str(row["source_uri"]))
            err = None
        except Exception as e:  # noqa: BLE001 - a missing/unreadable object is one error row
            data, err = None, f"{decode_mod.READ_ERROR}: {type(e).__name__}: {e}"
        t1 = time.perf_counter()
        if err is None:
            dec = decode_mod.decode(data, _member_camera(row), max_pixels, default_fov_degrees)
            err = dec.error
        t2 = time.perf_counter()
        read_s[i], decode_s[i] = t1 - t0, t2 - t1
        if err is None:
            images.append(dec.image)
            widths.append(dec.width)
            heights.append(dec.height)
            cam = dec.camera
            ks[i] = cam.intrinsics
            d = np.asarray(cam.distortion, np.float32).ravel()[:MAX_DISTORTION]
            dists[i, :len(d)] = d
            if cam.extrinsics is not None:
                exts[i] = cam.extrinsics
            cam_src.append(cam.source)
            errors.append("")
        else:
            images.append(np.zeros((1, 1, 3), np.uint8))
            widths.append(-1)
            heights.append(-1)
            cam_src.append("")
            errors.append(err)
    image_col = np.empty(n, dtype=object)
    image_col[:] = images
    return {
        "image_id": np.asarray(batch["image_id"], dtype=object),
        "source_uri": np.asarray(batch["source_uri"], dtype=object),
        "shard": np.asarray(batch["shard"], dtype=object),
        "image": image_col,
        "width": np.asarray(widths, np.int32),
        "height": np.asarray(heights, np.int32),
        "intrinsics": ks,
        "distortion": dists,
        "extrinsics": exts,
        "camera_source": np.asarray(cam_src, dtype=object),
        "error": np.asarray(errors, dtype=object),
        "read_seconds": read_s,
        "decode_seconds": decode_s,
    }


def _trim_distortion(d: np.ndarray) -> np.ndarray:
    nz = np.flatnonzero(d)
    return d[: nz[-1] + 1] if len(nz) else d[:0]


class InferEncode:
    """Callable stage (Ray Data style: load in ``__init__``, map a batch in ``__call__``):
    decoded batch -> Arrow table of the label schema."""

    def __init__(self, model_path: str, settings: InferenceSettings):
        self.inference = PoseInference(model_path, settings)

    def __call__(self, batch: dict) -> pa.Table:
        n = len(batch["image_id"])
        records = []
        todo, inputs = [], []
        for i in range(n):
            err = str(batch["error"][i]) or None
            cam = None
            if err is None:
                ext = batch["extrinsics"][i]
                cam = decode_mod.Camera(
                    np.asarray(batch["intrinsics"][i], np.float32), str(batch["camera_source"][i]),
                    _trim_distortion(np.asarray(batch["distortion"][i], np.float32)),
                    None if not np.isfinite(ext).all() else np.asarray(ext, np.float32))
                todo.append(i)
                inputs.append(ImageInput(np.asarray(batch["image"][i], np.uint8), cam.intrinsics,
                                         cam.distortion, cam.extrinsics))
            records.append(encode.ImageRecord(
                image_id=str(batch["image_id"][i]), source_uri=str(batch["source_uri"][i]),
                shard=str(batch["shard"][i]),
                width=int(batch["width"][i]) if err is None else None,
                height=int(batch["height"][i]) if err is None else None,
                camera=cam, error=err))
        if inputs:
            try:
                preds = self.inference(inputs)
            except Exception as e:  # noqa: BLE001 - retry one by one so one bad image costs one row
                preds = self._one_by_one(inputs, e)
            for i, pred in zip(todo, preds, strict=True):
                if isinstance(pred, str):
                    records[i].error = pred
                else:
                    records[i].prediction = pred
        return encode.to_table(records)

    def _one_by_one(self, inputs: list[ImageInput], batch_error: Exception) -> list:
        out = []
        for item in inputs:
            try:
                out.extend(self.inference([item]))
            except Exception as e:  # noqa: BLE001
                out.append(f"inference_error: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
        return out
