"""Memory over a long run: the driver and every Ray worker (inference actor, read and decode tasks)
sampled while ``annotator run`` annotates 10,000 images (the sample photos repeated through a
manifest). Must stay flat: the script fits MiB per 1000 images over the second half.

What is measured is each process's *anonymous* memory (``Anonymous`` in /proc/PID/smaps_rollup:
heap, Python objects, TensorFlow tensors), where a leak would show. RSS is recorded too but is no
leak test: Ray's object store is a shared memory-mapped file, and every page of it a worker has
touched counts in that worker's RSS until the mapping goes, so RSS can climb towards the store's
size without a leak (an RSS-only run of this script saw the actor at 2.0 -> 4.5 GiB over 10k
images; the next run, measuring both, saw the actor's anonymous memory and RSS flat).

By default the model is ``--model light``: a tiny SavedModel with the official MeTRAbs API that
returns one fixed 33-joint person per image, so 10^4 images fit in minutes on 2 CPU cores and the
pipeline's own memory (Ray Data blocks, the sink, commits, the actor wrapper) is what is measured.
``--model default --images 600`` measures the real model the same way (slower).

    .venv/bin/python bench/memory.py [--images 10000] [--model light|default|PATH]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402


def build_light_model(path: Path) -> Path:
    """An official-API SavedModel whose work is negligible: one person per image, fixed pose."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    pose = tf.constant((rng.normal(0, 300, (33, 3)) + [0, 0, 3000]).astype(np.float32))

    class Light(tf.Module):
        def __init__(self):
            super().__init__()
            self.joint_names = tf.Variable([f"j{i}" for i in range(33)], dtype=tf.string, trainable=False)
            self.joint_edges = tf.Variable([[i, i + 1] for i in range(32)], dtype=tf.int32, trainable=False)
            self.per_skeleton_joint_names = {"light_33": self.joint_names}
            self.per_skeleton_joint_edges = {"light_33": self.joint_edges}

        @tf.function(input_signature=[
            tf.TensorSpec((None, None, None, 3), tf.uint8), tf.TensorSpec((None, 3, 3), tf.float32),
            tf.TensorSpec((None, None), tf.float32), tf.TensorSpec((None, 4, 4), tf.float32),
            tf.TensorSpec((3,), tf.float32), tf.TensorSpec((), tf.float32), tf.TensorSpec((), tf.int32),
            tf.TensorSpec((), tf.int32), tf.TensorSpec((), tf.int32), tf.TensorSpec((), tf.bool),
            tf.TensorSpec((), tf.string), tf.TensorSpec((), tf.float32), tf.TensorSpec((), tf.float32),
            tf.TensorSpec((), tf.int32), tf.TensorSpec((), tf.bool), tf.TensorSpec((), tf.bool)])
        def detect_poses_batched(self, images, intrinsic_matrix, distortion_coeffs, extrinsic_matrix,
                                 world_up_vector, default_fov_degrees, internal_batch_size, antialias_factor,
                                 num_aug, average_aug, skeleton, detector_threshold, detector_nms_iou_threshold,
                                 max_detections, detector_flip_aug, suppress_implausible_poses):
            n = tf.shape(images)[0]
            mean = tf.reduce_mean(tf.cast(images, tf.float32))  # touch the pixels once
            poses3d = tf.tile(pose[tf.newaxis, tf.newaxis], [n, 1, 1, 1]) + mean * 0.0
            k = intrinsic_matrix[:, tf.newaxis]
            xy = poses3d[..., :2] / poses3d[..., 2:]
            poses2d = tf.einsum("nkjc,nkdc->nkjd", xy, k[..., :2, :2]) + k[..., tf.newaxis, :2, 2]
            boxes = tf.tile(tf.constant([[[10.0, 10.0, 50.0, 100.0, 0.9]]]), [n, 1, 1])
            lengths = tf.ones([n], tf.int64)

            def ragged(x):
                flat = tf.reshape(x, tf.concat([[-1], tf.shape(x)[2:]], 0))
                return tf.RaggedTensor.from_row_lengths(flat, lengths)

            return {"boxes": ragged(boxes), "poses3d": ragged(poses3d), "poses2d": ragged(poses2d)}

    module = Light()
    tf.saved_model.save(module, str(path))
    return path


def mem_mib(pid: int) -> tuple[float, float] | None:
    """(anonymous, RSS) MiB of a process, from /proc/PID/smaps_rollup."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
        return int(fields["Anonymous"].split()[0]) / 1024, int(fields["Rss"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        return None


def ray_workers() -> dict[int, str]:
    """pid -> role of every Ray worker process on this machine (from its process title)."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            title = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::"):
            role = "actor" if "InferenceStage" in title else ("idle" if "IDLE" in title else "tasks")
            out[int(d.name)] = role
    return out


class Sampler(threading.Thread):
    def __init__(self, driver_pid: int, progress: Path, every: float = 2.0):
        super().__init__(daemon=True)
        self.driver_pid, self.progress, self.every = driver_pid, progress, every
        self.samples: list[dict] = []
        self.stop = threading.Event()

    def run(self) -> None:
        import json

        while not self.stop.is_set():
            done = 0
            try:
                done = json.loads(self.progress.read_text()).get("processed", 0)
            except (OSError, ValueError):
                pass
            workers = ray_workers()
            sample = {"t": time.time(), "images": done, "workers": len(workers)}
            for pid, role in [(self.driver_pid, "driver"), *((p, r) for p, r in workers.items())]:
                m = mem_mib(pid)
                if m is not None:
                    sample[f"{role}_mib"] = sample.get(f"{role}_mib", 0.0) + m[0]
                    sample[f"{role}_rss_mib"] = sample.get(f"{role}_rss_mib", 0.0) + m[1]
            self.samples.append(sample)
            self.stop.wait(self.every)


def slope_per_1000(samples: list[dict], key: str) -> float | None:
    """MiB per 1000 images, least squares over the second half of the run (after warm-up)."""
    pts = [(s["images"], s[key]) for s in samples if s.get(key) is not None and s["images"] > 0]
    half = [p for p in pts if p[0] >= pts[-1][0] / 2] if pts else []
    if len(half) < 3 or half[-1][0] == half[0][0]:
        return None
    x, y = np.array(half, dtype=np.float64).T
    return round(float(np.polyfit(x, y, 1)[0] * 1000), 2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--model", default="light", help="light (default), or a model name / SavedModel path")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        tmp = Path(tmp)
        model = str(build_light_model(tmp / "light_model")) if args.model == "light" else args.model
        samples = sorted((c.REPO / "samples" / "images").iterdir())
        uris = [str(samples[i % len(samples)]) for i in range(args.images)]
        pq.write_table(pa.table({"image_id": [f"img{i:06d}" for i in range(args.images)], "uri": uris}),
                       tmp / "manifest.parquet")
        out = tmp / "out"
        cmd = [c.ANNOTATOR, "run", str(tmp / "manifest.parquet"), str(out), "--kind", "manifest", "--model", model,
               "--batch-size", str(args.batch_size), "--shard-size", str(args.shard_size), "--no-progress"]
        started = time.time()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        sampler = Sampler(proc.pid, out / "_progress.json")
        sampler.start()
        stdout, stderr = proc.communicate(timeout=3600)
        sampler.stop.set()
        sampler.join()
        if proc.returncode != 0:
            raise RuntimeError(f"annotator run failed:\n{stdout[-2000:]}\n{stderr[-3000:]}")
        wall = time.time() - started
    s = sampler.samples
    result = {"machine": c.machine(), "images": args.images, "model": args.model, "wall_seconds": round(wall, 1),
              "samples": s}
    for role in ("driver", "actor", "tasks"):
        key = f"{role}_mib"
        vals = [x[key] for x in s if x.get(key) is not None and x["images"] > 0]
        result[role] = {
            "start_mib": round(vals[0], 1) if vals else None, "end_mib": round(vals[-1], 1) if vals else None,
            "max_mib": round(max(vals), 1) if vals else None, "mib_per_1000_images": slope_per_1000(s, key),
            "rss_mib_per_1000_images": slope_per_1000(s, f"{role}_rss_mib")}
    path = c.save("memory", result, args.out)
    rows = [(k, result[k]["start_mib"], result[k]["max_mib"], result[k]["end_mib"], result[k]["mib_per_1000_images"],
             result[k]["rss_mib_per_1000_images"]) for k in ("driver", "actor", "tasks")]
    print(c.table(rows, ("process", "first MiB", "max MiB", "last MiB", "slope MiB/1000 img (2nd half)",
                         "RSS slope (not a leak test)")))
    print("(anonymous memory; read and decode tasks summed over their worker processes)")
    print(f"\n{args.images} images with model {args.model} in {result['wall_seconds']} s, "
          f"{len(s)} samples -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
