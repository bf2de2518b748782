"""The pipeline's stage functions on columnar batches (dict of numpy arrays, Ray Data's "numpy"
format): read -> decode -> infer+encode. Runners (Ray Data, Beam, tests) only wire these.

Batch contract (columns):

* shard rows (read's input): the plan's shard table (``annotator.pipeline.plan.SHARD_SCHEMA``) plus
  ``only`` (JSON list of image ids to redo, '' for all; used by ``--retry-errors``).
* after ``read_shards``: image_id, source_uri, shard (str); data (encoded bytes, or raw RGB for video
  frames with raw_h/raw_w > 0); the camera columns of ``annotator.labels.camera_codec`` (intrinsics
  [N,3,3], distortion [N,12], extrinsics [N,4,4], NaN: not given; camera_source, '' if not given);
  error (str, '' when ok); shard_rows (int64: the shard's row count, set on the rows of its last
  batch, else -1); fail (str: why the whole shard failed, '' normally); read_s (float); read_retries
  (int: storage requests this process retried since its last batch, on a batch's first row).
* after ``decode_batch``: the same minus data/raw_*, the camera now always given for ok rows, plus
  image (uint8 HxWx3; 1x1 for error rows), width, height, decode_s, decode_pid.
* after ``InferenceStage``: an Arrow table of the label schema plus driver-only columns that start
  with ``_`` (shard_rows, fail, per-stage seconds, read retries, actor, GPU ids, the model load's id,
  stop: why the job must stop, ``pipeline.budget``), which the sink drops.

Why a shard can "fail" as a whole: a tar or video that cannot be read to the end, or an inference
batch that keeps timing out. Its rows are then not committed; the runner retries the shard a
bounded number of times and names it if it keeps failing.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np
import pyarrow as pa

from annotator.labels import camera_codec, ground_plane
from annotator.labels.camera_codec import Camera
from annotator.models import loader
from annotator.pipeline import budget, encode, errors, plan, retries, rig, sources, upright
from annotator.pipeline import decode as decode_mod
from annotator.pipeline.errors import BAD_CAMERA, CHANGED, EMPTY_SHARD, SHARD_READ_ERROR, TIMEOUT
from annotator.pipeline.infer import ImageInput, InferenceSettings, PoseInference

log = logging.getLogger(__name__)

EXTRA_COLUMNS = ("_shard_rows", "_fail", "_read_s", "_read_retries", "_decode_s", "_infer_s", "_actor", "_gpu",
                 "_model_load", "_decode_pid", "_done_at", "_stop", "_up_hint")


# ---------------------------------------------------------------------------------------------
# read


class _Rows:
    """Accumulates read rows and emits them as batches of ``size``.

    A full buffer is emitted only when the next row arrives, so the shard's last batch (the one
    that carries ``shard_rows``) is never empty."""

    def __init__(self, shard: str, size: int):
        self.shard, self.size = shard, size
        self.rows: list[dict] = []
        self.count = 0
        self.ids: set[str] = set()
        self.started = time.perf_counter()

    def add(self, image_id: str, uri: str, data: bytes = b"", raw: np.ndarray | None = None,
            camera: Camera | None = None, error: str = "", fail: str = "") -> dict | None:
        """Add a row; returns a batch to yield when the buffer was full."""
        out = self.emit() if len(self.rows) >= self.size else None
        self.rows.append({"image_id": image_id, "source_uri": uri, "data": data, "raw": raw, "camera": camera,
                          "error": error, "fail": fail})
        self.count += 1
        self.ids.add(image_id)
        return out

    def emit(self, last: bool = False) -> dict:
        rows, self.rows = self.rows, []
        n = len(rows)
        elapsed = time.perf_counter() - self.started
        self.started = time.perf_counter()
        cams = camera_codec.columns(n)
        raw_hw = np.zeros((n, 2), np.int32)
        data = np.empty(n, dtype=object)
        read_retries = np.zeros(n, np.int64)  # storage requests retried for these rows: on the first
        if n:
            read_retries[0] = retries.take()
        for i, r in enumerate(rows):
            camera_codec.put(cams, i, r["camera"])
            if r["raw"] is not None:
                raw_hw[i] = r["raw"].shape[:2]
                data[i] = np.ascontiguousarray(r["raw"]).tobytes()
            else:
                data[i] = r["data"] or b""
        return {
            "image_id": np.asarray([r["image_id"] for r in rows], dtype=object),
            "source_uri": np.asarray([r["source_uri"] for r in rows], dtype=object),
            "shard": np.asarray([self.shard] * n, dtype=object),
            "data": data,
            "raw_h": raw_hw[:, 0], "raw_w": raw_hw[:, 1], **cams,
            "error": np.asarray([r["error"] for r in rows], dtype=object),
            "shard_rows": np.full(n, self.count if last else -1, np.int64),
            "fail": np.asarray([r["fail"] for r in rows], dtype=object),
            "read_s": np.full(n, elapsed / max(n, 1), np.float64),
            "read_retries": read_retries,
        }


def _shard_camera(shard: dict) -> Camera | None:
    camera = shard.get("camera")
    return camera_codec.from_json(camera, source=None) if isinstance(camera, str) and camera else None


def _read_files(shard: dict, plan_uri: str, only: set[str] | None, rows: _Rows, storage_options: dict | None,
                timeout_s: float | None, retries: int, fetch: int) -> Iterator[dict]:
    members = plan.members(plan_uri, shard, storage_options).to_pylist()
    if only is not None:
        members = [m for m in members if m["image_id"] in only]
    for start in range(0, len(members), fetch):
        window = members[start:start + fetch]
        uris = [m["uri"] for m in window]
        side_idx = [i for i, m in enumerate(window) if m["sidecar"]]
        got = sources.read_many(uris + [window[i]["sidecar"] for i in side_idx], storage_options, timeout_s, retries)
        sidecars = dict(zip(side_idx, got[len(uris):], strict=True))
        for i, m in enumerate(window):
            data, error, cam = got[i], "", None
            try:
                cam = camera_codec.from_lists(m["intrinsics"], m["distortion"], m["extrinsics"], m["camera_source"])
                if i in sidecars:
                    side = sidecars[i]
                    if isinstance(side, Exception):
                        raise side
                    cam = camera_codec.from_json(side, "sidecar")
            except Exception as e:  # noqa: BLE001 - a bad camera is one error row
                error = errors.text(BAD_CAMERA, e)
            if isinstance(data, Exception):
                error, data = errors.text(decode_mod.READ_ERROR, data), b""
            elif m["size"] is not None and m["size"] > 0 and len(data) != m["size"] and not error:
                # the plan is frozen: labels must be of the bytes it listed, not of a file replaced since
                error, data = errors.text(CHANGED, f"planned {m['size']} bytes, read {len(data)}"), b""
            if (out := rows.add(m["image_id"], m["uri"], data=data, camera=cam, error=error)) is not None:
                yield out


def _read_tar(shard: dict, name: str, only: set[str] | None, rows: _Rows,
              storage_options: dict | None) -> Iterator[dict]:
    uri = shard["source"]
    shard_cam = _shard_camera(shard)
    for key, files in sources.iter_tar_samples(uri, storage_options):
        ext = next((e for e in files if "." + e in sources.IMAGE_EXTENSIONS), None)
        if ext is None:
            continue
        image_id = f"{name}/{key}"
        if only is not None and image_id not in only:
            continue
        cam, error = shard_cam, ""
        if "json" in files:
            try:
                cam = camera_codec.from_json(files["json"], "sidecar")
            except Exception as e:  # noqa: BLE001
                error = errors.text(BAD_CAMERA, e)
        if (out := rows.add(image_id, f"{uri}#{key}.{ext}", data=files[ext], camera=cam, error=error)) is not None:
            yield out


def _read_video(shard: dict, name: str, only: set[str] | None, rows: _Rows,
                storage_options: dict | None) -> Iterator[dict]:
    uri = shard["source"]
    cam = _shard_camera(shard)
    for idx, frame in sources.iter_video_frames(uri, shard["start"], shard["stop"], shard["every"], storage_options):
        image_id = f"{name}/{idx:06d}"
        if only is not None and image_id not in only:
            continue
        if (out := rows.add(image_id, f"{uri}#frame={idx}", raw=frame, camera=cam)) is not None:
            yield out


def _read_rig(shard: dict, only: set[str] | None, rows: _Rows, storage_options: dict | None,
              fetch: int) -> Iterator[dict]:
    for image_id, uri, raw, data, cam in rig.read_views(shard, storage_options, fetch):
        if only is not None and image_id not in only:
            continue
        error = ""
        if isinstance(data, Exception):
            error, data = errors.text(decode_mod.READ_ERROR, data), b""
        if (out := rows.add(image_id, uri, data=data or b"", raw=raw, camera=cam, error=error)) is not None:
            yield out


def read_shard(shard: dict, plan_uri: str, storage_options: dict | None = None, batch_size: int = 16,
               timeout_s: float | None = 120.0, retries: int = 2, fetch: int | None = None) -> Iterator[dict]:
    """One shard -> batches of ``batch_size`` member rows with their bytes; the last batch carries
    the shard's row count; ``fetch``: files read concurrently (default ``batch_size``). A tar or video
    that breaks part-way ends in a row whose ``fail`` says why (the shard is then retried as a whole).
    With ``only`` (``--retry-errors``), every requested id gets a row."""
    only = set(json.loads(shard["only"])) if shard.get("only") else None
    rows = _Rows(shard["shard"], batch_size)
    name = shard.get("name") or str(shard.get("source") or "").rsplit("/", 1)[-1]
    empty = {"tar": (f"{name}/", "no images in this tar"),
             "video": (f"{name}/{shard.get('start', 0):06d}", "no frames decoded in this range"),
             rig.KIND: (f"{name}/{shard.get('start', 0):06d}", "no frames of any view decoded in this window")}
    try:
        if shard["kind"] == "files":
            yield from _read_files(shard, plan_uri, only, rows, storage_options, timeout_s, retries,
                                   fetch or batch_size)
        elif shard["kind"] == "tar":
            yield from _read_tar(shard, name, only, rows, storage_options)
        elif shard["kind"] == "video":
            yield from _read_video(shard, name, only, rows, storage_options)
        elif shard["kind"] == rig.KIND:
            yield from _read_rig(shard, only, rows, storage_options, fetch or batch_size)
        else:
            raise ValueError(f"unknown shard kind {shard['kind']!r}")
    except Exception as e:  # noqa: BLE001 - the shard fails; the job goes on
        rows.rows = []
        rows.add("", shard.get("source") or "", fail=errors.text(SHARD_READ_ERROR, e))
        yield rows.emit(last=True)
        return
    placeholder = empty.get(shard["kind"])
    if only is None and rows.count == 0 and placeholder:
        rows.add(placeholder[0], shard.get("source") or "", error=errors.text(EMPTY_SHARD, placeholder[1]))
    for image_id in sorted((only or set()) - rows.ids):
        # an error row that cannot be redone: the same reason again, or the member is gone
        if placeholder and image_id == placeholder[0]:
            error = errors.text(EMPTY_SHARD, placeholder[1])
        else:
            error = errors.text(decode_mod.READ_ERROR, "not found in the input any more")
        if (out := rows.add(image_id, shard.get("source") or "", error=error)) is not None:
            yield out
    yield rows.emit(last=True)


def read_shards(batch: dict, plan_uri: str, storage_options: dict | None = None, batch_size: int = 16,
                timeout_s: float | None = 120.0, retries: int = 2, fetch: int | None = None) -> Iterator[dict]:
    """Ray Data ``map_batches`` form of ``read_shard`` over a batch of shard rows (a generator, so
    a shard's images stream out ``batch_size`` at a time)."""
    keys = list(batch)
    for i in range(len(batch["shard"])):
        shard = {k: _py(batch[k][i]) for k in keys}
        yield from read_shard(shard, plan_uri, storage_options, batch_size, timeout_s, retries, fetch)


def _py(v):
    return v.item() if isinstance(v, np.generic) else v


# ---------------------------------------------------------------------------------------------
# decode


def decode_batch(batch: dict, max_pixels: int = decode_mod.DEFAULT_MAX_PIXELS,
                 default_fov_degrees: float = decode_mod.DEFAULT_FOV_DEGREES) -> dict:
    """Bytes (or raw frames) -> RGB images and cameras. Failures become rows with ``error`` set."""
    n = len(batch["image_id"])
    images, widths, heights, errs = [], [], [], []
    cams = camera_codec.columns(n)
    decode_s = np.zeros(n, np.float64)
    for i in range(n):
        t0 = time.perf_counter()
        err = str(batch["error"][i]) or str(batch["fail"][i]) or None
        dec = None
        if err is None:
            given = camera_codec.take(batch, i)
            h, w = int(batch["raw_h"][i]), int(batch["raw_w"][i])
            data = batch["data"][i]
            if h > 0:
                frame = np.frombuffer(data, np.uint8).reshape(h, w, 3)
                dec = decode_mod.from_array(frame, given, default_fov_degrees)
            else:
                dec = decode_mod.decode(bytes(data), given, max_pixels, default_fov_degrees)
            err = dec.error
        decode_s[i] = time.perf_counter() - t0
        if err is None:
            images.append(dec.image)
            widths.append(dec.width)
            heights.append(dec.height)
            camera_codec.put(cams, i, dec.camera)
            errs.append("")
        else:
            images.append(np.zeros((1, 1, 3), np.uint8))
            widths.append(-1)
            heights.append(-1)
            errs.append(str(batch["error"][i]) or (err if not str(batch["fail"][i]) else ""))
    image_col = np.empty(n, dtype=object)
    image_col[:] = images
    return {
        "image_id": np.asarray(batch["image_id"], dtype=object),
        "source_uri": np.asarray(batch["source_uri"], dtype=object),
        "shard": np.asarray(batch["shard"], dtype=object),
        "image": image_col,
        "width": np.asarray(widths, np.int32),
        "height": np.asarray(heights, np.int32),
        **cams,
        "error": np.asarray(errs, dtype=object),
        "shard_rows": np.asarray(batch["shard_rows"], np.int64),
        "fail": np.asarray(batch["fail"], dtype=object),
        "read_s": np.asarray(batch["read_s"], np.float64),
        "read_retries": np.asarray(batch["read_retries"], np.int64),
        "decode_s": decode_s,
        "decode_pid": np.full(n, os.getpid(), np.int64),
    }


def split_rows(batch: dict) -> Iterator[dict]:
    """A decoded columnar batch -> one element per image (an engine that batches elements itself,
    as Beam's RunInference does, batches them again for the model: ``stack_rows``)."""
    keys = list(batch)
    for i in range(len(batch["image_id"])):
        yield {k: batch[k][i] for k in keys}


def stack_rows(rows: Sequence[dict]) -> dict:
    """Per-image elements -> the columnar batch ``InferenceStage`` takes (images stay a list:
    their sizes differ)."""
    out = {}
    for k in rows[0]:
        values = [r[k] for r in rows]
        if k == "image" or isinstance(values[0], str | bytes):
            col = np.empty(len(values), dtype=object)
            col[:] = values
            out[k] = col
        else:
            out[k] = np.stack([np.asarray(v) for v in values])
    return out


# ---------------------------------------------------------------------------------------------
# infer + encode


class BatchTimeout(TimeoutError):
    pass


class InferenceStage:
    """Callable stage (Ray Data style: load in ``__init__``, map a batch in ``__call__``): decoded
    batch -> Arrow table of the label schema (+ ``_`` columns for the driver).

    The model is loaded once per actor. Each model call runs under ``batch_timeout_s`` with up to
    ``batch_retries`` retries; a batch that keeps timing out marks its shards failed (the runner
    retries and, if need be, names them) instead of hanging the job's tail (img2dataset #289).

    Failures are sorted (``pipeline.budget``): an image the model fails on is an error row; a
    model that fails on every image of the actor's first ``first_batches`` batches, a programming
    error, or an actor that cannot load or warm up its model stops the job (``_stop`` on the rows;
    at start-up: the constructor raises ``budget.ErrorBudgetExceeded``).
    """

    def __init__(self, model: str, settings: InferenceSettings, batch_timeout_s: float | None = None,
                 batch_retries: int = 1, expected_sha256: str | None = None, storage_options: dict | None = None,
                 on_ready: Callable[[dict], None] | None = None, first_batches: int = 3):
        self.actor = f"{socket.gethostname()}:{os.getpid()}"
        try:
            self.inference = self._load(model, settings, expected_sha256, storage_options)
        except Exception as e:
            # without its model this actor labels nothing, nor will its restarts on this node: the
            # job stops with the reason (``budget``) instead of failing every shard, round after round
            raise budget.ErrorBudgetExceeded(f"{budget.MARK}the inference actor could not start on {self.actor}: "
                                             f"{errors.describe(e)}") from e
        self.load_id = uuid.uuid4().hex[:12]  # one per model load: the summary counts an actor's loads
        self.batch_timeout_s = batch_timeout_s
        self.batch_retries = batch_retries
        self.first = budget.FirstBatches(first_batches)
        self.stop = ""  # once set, on every row this stage emits: the runner stops the job
        self.gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        self.world_up = tuple(settings.world_up_vector)
        self.up_warned = False
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="annotator-infer")
        if on_ready is not None:  # the runner learns of every started model, busy or not
            on_ready({"actor": self.actor, "gpu": self.gpu, "model_load": self.load_id,
                      "load_seconds": round(self.inference.load_seconds, 2),
                      "warmup_seconds": None if self.inference.warmup_seconds is None
                      else round(self.inference.warmup_seconds, 2)})

    @staticmethod
    def _load(model: str, settings: InferenceSettings, expected_sha256: str | None,
              storage_options: dict | None) -> PoseInference:
        # Resolve the model on this node (a remote model is fetched once per node into its cache;
        # a built-in one must be built into the node's image) and make sure it is the very model the
        # driver fingerprinted: a different copy would silently mix two models in one output.
        resolved = loader.resolve(model, build_missing=False, storage_options=storage_options)
        if expected_sha256 and resolved.sha256 != expected_sha256:
            raise RuntimeError(f"model {model!r} here has sha256 {resolved.sha256[:12]}, the job was planned "
                               f"with {expected_sha256[:12]}")
        inference = PoseInference(resolved.path, settings)
        try:  # Ray Data keeps reading and decoding while actors construct: warm up now
            inference.warm_up()
        except Exception as e:  # a model that cannot run on a small black image will not run on the job's
            raise RuntimeError(f"the model's warm-up call failed: {errors.describe(e)}") from e
        return inference

    def _run(self, inputs: list[ImageInput]):
        if not self.batch_timeout_s:
            return self.inference(inputs)
        last = None
        for _ in range(self.batch_retries + 1):
            future = self._pool.submit(self.inference, inputs)
            try:
                return future.result(timeout=self.batch_timeout_s)
            except FutureTimeout:
                # the stuck call keeps its thread; later calls get a fresh one
                self._pool.shutdown(wait=False)
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="annotator-infer")
                last = BatchTimeout(f"inference on {len(inputs)} image(s) exceeded {self.batch_timeout_s:g} s, "
                                    f"{self.batch_retries + 1} tries")
        raise last

    def __call__(self, batch: dict) -> pa.Table:
        n = len(batch["image_id"])
        records, todo, inputs = [], [], []
        fails = [str(f) for f in batch["fail"]]
        up_hints: list[str | None] = [None] * n  # per image with extrinsics: "" or a likelier world up
        for i in range(n):
            err = str(batch["error"][i]) or fails[i] or None
            cam = None
            if err is None:
                cam = camera_codec.take(batch, i)
                todo.append(i)
                inputs.append(ImageInput(np.asarray(batch["image"][i], np.uint8), cam.intrinsics,
                                         cam.distortion, cam.extrinsics))
                if cam.extrinsics is not None:
                    up_hints[i] = self._up_hint(cam.extrinsics, str(batch["image_id"][i]))
            records.append(encode.ImageRecord(
                image_id=str(batch["image_id"][i]), source_uri=str(batch["source_uri"][i]),
                shard=str(batch["shard"][i]),
                width=int(batch["width"][i]) if err is None else None,
                height=int(batch["height"][i]) if err is None else None,
                camera=cam, error=err))
        infer_s = np.zeros(n, np.float64)
        if inputs:
            started = time.perf_counter()
            try:
                preds = self._predict(inputs)
            except BatchTimeout as e:
                preds = None
                for i in todo:
                    fails[i] = errors.text(TIMEOUT, str(e))
            except budget.PROGRAMMING_ERRORS as e:
                preds = None  # a bug: no row may say it is the image's fault; the shard stays uncommitted
                for i in todo:
                    fails[i] = errors.text(errors.PROGRAMMING_ERROR, e)
                self.stop = self.stop or (f"{budget.MARK}a programming error in inference on {self.actor}, not a "
                                          f"fault of the images: {errors.describe(e)}")
            if preds is not None:
                for i, pred in zip(todo, preds, strict=True):
                    if isinstance(pred, str):
                        records[i].error = pred
                    else:
                        records[i].prediction = pred
                failed = [p for p in preds if isinstance(p, str)]
                if self.first.add(len(preds), failed) and not self.stop:
                    self.stop = (f"{budget.MARK}the model failed on every image of its first {self.first.n} batches "
                                 f"on {self.actor}: {self.first.first_error}")
                if failed and self.first.doubtful:  # no row may blame the images before the model proved it runs
                    for i in todo:
                        fails[i] = fails[i] or records[i].error
            infer_s[todo] = (time.perf_counter() - started) / len(todo)
        table = encode.to_table(records)
        extras = {
            "_shard_rows": pa.array(np.asarray(batch["shard_rows"], np.int64)),
            "_fail": pa.array(fails, pa.string()),
            "_read_s": pa.array(np.asarray(batch["read_s"], np.float64)),
            "_read_retries": pa.array(np.asarray(batch["read_retries"], np.int64)),
            "_decode_s": pa.array(np.asarray(batch["decode_s"], np.float64)),
            "_infer_s": pa.array(infer_s),
            "_actor": pa.array([self.actor] * n, pa.string()),
            "_gpu": pa.array([self.gpu] * n, pa.string()),
            "_model_load": pa.array([self.load_id] * n, pa.string()),
            "_decode_pid": pa.array(np.asarray(batch["decode_pid"], np.int64)),
            # when this actor finished the batch: the driver derives each actor's steady rate from it
            "_done_at": pa.array(np.full(n, time.time()), pa.float64()),
            "_stop": pa.array([self.stop] * n, pa.string()),
            "_up_hint": pa.array(up_hints, pa.string()),
        }
        for name in EXTRA_COLUMNS:
            table = table.append_column(name, extras[name])
        return table

    def _up_hint(self, extrinsics: np.ndarray, image_id: str) -> str:
        """"" when the world's up fits this camera, else the likelier axis ("0,0,1"): the summary
        counts them (``ground_plane.likelier_up``); the first is logged at once, for whoever watches."""
        axis = ground_plane.likelier_up(extrinsics, self.world_up)
        if axis is None:
            return ""
        hint = upright.axis_text(axis)
        if not self.up_warned:
            self.up_warned = True
            log.warning("%s: the world's up %s is far from this camera's image up; %s fits it (--world-up %s?)",
                        image_id, upright.axis_text(self.world_up), hint, hint)
        return hint

    def _predict(self, inputs: list[ImageInput]) -> list:
        """Predictions, or per-image error strings; raises ``BatchTimeout`` and programming errors
        (``budget.PROGRAMMING_ERRORS``), which are never an image's fault."""
        try:
            return self._run(inputs)
        except (BatchTimeout, *budget.PROGRAMMING_ERRORS):
            raise
        except Exception:  # noqa: BLE001 - retry one by one so one bad image costs one row
            out = []
            for item in inputs:
                try:
                    out.extend(self._run([item]))
                except (BatchTimeout, *budget.PROGRAMMING_ERRORS):
                    raise
                except Exception as e:  # noqa: BLE001
                    out.append(errors.text(errors.INFERENCE_ERROR, e))
            return out
