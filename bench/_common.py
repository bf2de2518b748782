"""Shared pieces of the benchmark scripts: test images, the bare model loop, the pipeline run,
results as JSON + a short table. Every number a script prints is measured in that run."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
VIDEOS = REPO / "samples" / "pose2sim" / "Demo_SinglePerson" / "videos"
RESULTS = REPO / "bench" / "results"
ANNOTATOR = str(Path(sys.executable).with_name("annotator"))


def frames(dest: Path, n: int, cams: tuple[str, ...] = ("cam03", "cam04"), every: int = 3,
           max_side: int | None = None, videos: Path = VIDEOS) -> list[Path]:
    """``n`` JPEG frames of real people (the Pose2Sim videos, BSD-3), written once into ``dest``.

    cam03/cam04 frames are all 1088x1920, so batches share one image size as video frames do.
    ``max_side`` downsizes them (cheaper runs on a slow machine); ``videos``: another clip's folder."""
    import av

    dest.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    per_cam = -(-n // len(cams))
    for cam in cams:
        with av.open(str(videos / f"{cam}.mp4")) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i % every:
                    continue
                path = dest / f"{cam}_{i:03d}.jpg"
                if not path.exists():
                    img = frame.to_image()
                    if max_side:
                        img.thumbnail((max_side, max_side))
                    img.save(path, quality=90)
                out.append(path)
                if sum(p.name.startswith(cam) for p in out) >= per_cam:
                    break
    return sorted(out)[:n]


def decode_all(paths: list[Path]) -> list[np.ndarray]:
    from PIL import Image

    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


def default_k(image: np.ndarray, fov: float = 55.0) -> np.ndarray:
    from annotator.pipeline.decode import default_intrinsics

    h, w = image.shape[:2]
    return default_intrinsics(w, h, fov)


def bare_batched(model, images: list[np.ndarray], batch_size: int, num_aug: int, repeats: int = 1) -> dict:
    """The exported model in a tight loop on pre-decoded batches (same call as the pipeline's:
    ``detect_poses_batched`` with per-image intrinsics). Warm-up (graph tracing) excluded."""
    import tensorflow as tf

    batches = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]

    def call(batch):
        k = np.stack([default_k(im) for im in batch]).astype(np.float32)
        out = model.detect_poses_batched(tf.constant(np.stack(batch)), intrinsic_matrix=tf.constant(k),
                                         num_aug=num_aug)
        return int(out["boxes"].flat_values.shape[0])

    for b in {len(b): b for b in batches}.values():  # one warm-up per batch shape
        call(b)
    people = 0
    started, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        for b in batches:
            people += call(b)
    wall = time.perf_counter() - started
    n = len(images) * repeats
    return {"images": n, "seconds": round(wall, 3), "images_per_second": round(n / wall, 3),
            "people": people, "cpu_seconds": round(time.process_time() - cpu0, 2)}


def annotator_run(input_dir: Path, output: Path, *args: str, timeout: int = 1800) -> dict:
    """``annotator run`` end to end in a subprocess (its own embedded Ray); wall time + its summary."""
    started = time.perf_counter()
    proc = subprocess.run([ANNOTATOR, "run", str(input_dir), str(output), "--no-progress", *args],
                          capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"annotator run failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    summary = json.loads((output / "_summary.json").read_text())
    return {"wall_seconds": round(wall, 2), "summary": summary}


# The start of a measured child process's script (a fresh interpreter per case): its memory from
# /proc (``status_kib("VmHWM")``: peak, ``"VmRSS"``: now), ``before`` anything is imported.
CHILD_PRELUDE = r"""
import json, sys, time

def status_kib(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])

before = status_kib("VmRSS")
"""


def run_child(script: str, *args: str, timeout: int = 900) -> dict:
    """Run a ``CHILD_PRELUDE`` script in a fresh interpreter; its last stdout line (JSON), floats
    rounded, plus ``growth_mib``: its peak memory over its memory before the work."""
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()},
            "growth_mib": round(r["peak_rss_mib"] - r["rss_before_mib"], 1)}


def sized_manifests(sizes: str, prefix: str, write) -> Iterator[tuple[int, Path, str]]:
    """For each of the comma-separated ``sizes``: a manifest of that many URIs written by
    ``write(path, n)`` in a temporary folder (removed at the end); yields (n, manifest, folder)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        for n in (int(x) for x in sizes.split(",")):
            manifest = Path(tmp) / f"manifest_{n}.parquet"
            write(manifest, n)
            yield n, manifest, tmp


def plan_sizes_args(doc: str, sizes: str) -> argparse.Namespace:
    """The arguments of the plan-scale benches (``plan.py``, ``changes.py``): manifest sizes, shard
    size, where to save the JSON."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=sizes)
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--out", type=Path, default=None)
    return ap.parse_args()


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    try:
        import tensorflow as tf

        gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    except Exception:  # noqa: BLE001 - reporting only
        gpus = []
    return {"cpu": cpu, "cores": os.cpu_count(), "gpus": gpus, "python": platform.python_version(),
            "date": dt.datetime.now().isoformat(timespec="seconds"), "commit": commit,
            "load_average_1min_at_start": round(os.getloadavg()[0], 2)}


def save(name: str, result: dict, out: Path | None = None) -> Path:
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=True))
    return path


def table(rows: list[tuple], header: tuple) -> str:
    cols = list(zip(header, *rows, strict=False))
    widths = [max(len(str(c)) for c in col) for col in cols]
    line = "  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def rig_stage(scene: Path, model: str = "default"):
    """(the checked rig of a Pose2Sim scene, the pipeline's inference for its views (coco_19, the
    calibration's world up, the floor), the fusion's skeleton): what the rig benchmarks share."""
    import tensorflow as tf

    from annotator.labels import fusion
    from annotator.models import loader
    from annotator.pipeline import calibration, rig
    from annotator.pipeline.infer import InferenceSettings, PoseInference

    r = rig.check(scene, calibration.load(scene / "calibration"))
    up = calibration.world_up(scene / "calibration")
    stage = PoseInference(tf.saved_model.load(loader.resolve(model).path),
                          InferenceSettings(skeleton="coco_19", world_up_vector=up, ground_plane=True))
    return r, stage, fusion.RigSkeleton.of(stage.skeleton["joint_names"], stage.skeleton["edges"])
