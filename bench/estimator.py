"""The estimator vs its networks alone, on the same frames, in one process (target: <= 1.5).

(a) estimator: the default model's ``detect_poses_batched`` (built in memory from the same converted
    networks and options as the SavedModel) on batches of B frames, num_aug 1;
(b) networks: every network call (a) makes for those frames, alone, on inputs prepared beforehand:
    MoveNet once per detector view per image (the same padded input sizes) and BlazePose once per
    person per crop pass (the alignment pass and the final crops, batched as the estimator batches
    them). What (a) spends beyond (b) is the machinery: resizing and padding for the detector, NMS,
    the pyramid, the perspective warps, reconstruction, consensus.
(c) the machinery's parts, each timed alone: the detector's resize + pad + NMS (its candidates minus
    MoveNet), the pyramid + pixel table, one warp pass.

The calls alternate (a, b, a, b, ...) so that a machine whose speed drifts affects both alike.

Default frames: Demo_MultiPerson (1088x1920, two people and a bystander, as the frames behind the
estimator's measured cost); ``--scene samples/pose2sim/Demo_SinglePerson`` for one person.

    .venv/bin/python bench/estimator.py [--images 16] [--batch-size 8] [--repeats 3] [--scene DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scene", type=Path, default=c.REPO / "samples" / "pose2sim" / "Demo_MultiPerson")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import tensorflow as tf

    from annotator.estimator import crops
    from annotator.estimator.options import EstimatorOptions
    from annotator.eval import ablation

    with tempfile.TemporaryDirectory() as tmp:
        images = c.decode_all(c.frames(Path(tmp), args.images, videos=args.scene / "videos"))
    networks = ablation.Networks.load("default-full")
    est = networks.estimator(EstimatorOptions())
    detector, crop_model = networks.detector, networks.crop_model
    batches = [np.stack(images[i:i + args.batch_size]) for i in range(0, len(images), args.batch_size)]
    ks = [np.stack([c.default_k(im) for im in b]).astype(np.float32) for b in batches]

    def estimator() -> list[int]:
        """People per batch."""
        return [int(est.detect_poses_batched(tf.constant(b), intrinsic_matrix=tf.constant(k), num_aug=1)
                    ["boxes"].flat_values.shape[0]) for b, k in zip(batches, ks, strict=True)]

    # the networks' own inputs, prepared once: MoveNet's padded view of every image, BlazePose crops
    people_per_batch = estimator()
    hw = np.array(images[0].shape[:2], np.float64)
    view_inputs = []
    for size, pad in detector.views:
        scale = size / (hw.max() * (1 + 2 * pad))
        new_hw = np.maximum(np.round(hw * scale), 1).astype(int)
        padded = ((new_hw + 2 * np.round(hw * scale * pad).astype(int)) + 31) // 32 * 32
        view_inputs.append(tf.zeros([1, *padded, 3], tf.int32) + 100)
    res = crop_model.input_resolution
    crop_batches = [tf.image.resize(tf.constant(b[:1], tf.float32) / 255.0, (res, res))[0][tf.newaxis]
                    * tf.ones([max(n, 1), 1, 1, 1]) for b, n in zip(batches, people_per_batch, strict=True)]
    movenet = detector.model.signatures["serving_default"]
    blazepose = crop_model.model.signatures["serving_default"]

    def movenet_only():
        for b in batches:
            for _ in range(len(b)):
                for x in view_inputs:
                    movenet(input=x)["output_0"].numpy()

    def nets():
        movenet_only()
        for crops_in in crop_batches:
            for _ in range(2):  # alignment pass + final crops
                blazepose(input_1=crops_in)["ld_3d"].numpy()

    def detector_only():
        for b in batches:
            detector.detect(tf.constant(b), 0.3, 0.7, -1, False).flat_values.numpy()

    @tf.function
    def pyramid(images):
        return crops.pixel_table(crops.build_pyramid(tf.cast(images, tf.float32), levels=3)).table  # as the model

    def pyramid_only():
        for b in batches:
            pyramid(tf.constant(b)).numpy()

    parts = {"estimator": estimator, "networks": nets, "detector (views + NMS)": detector_only,
             "MoveNet alone": movenet_only, "pyramid + pixel table": pyramid_only}
    for fn in parts.values():  # warm-up: trace every graph once
        fn()
    times: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(args.repeats):
        for name, fn in parts.items():
            times[name] += timed(fn, 1)
    n = len(images)
    ms = {name: 1000 * statistics.median(t) / n for name, t in times.items()}
    ratio = ms["estimator"] / ms["networks"]
    result = {"machine": c.machine(), "scene": args.scene.name, "images": n, "batch_size": args.batch_size,
              "people": sum(people_per_batch),
              "image_size": list(images[0].shape[:2]), "detector_views": [list(v) for v in detector.views],
              "ms_per_image": {k: round(v, 1) for k, v in ms.items()},
              "runs_seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
              "estimator_over_networks": round(ratio, 3), "networks_share": round(1 / ratio, 3)}
    c.save("estimator", result, args.out)
    print(c.table([(k, f"{v:.1f}") for k, v in ms.items()], ("ms per image (median of runs)", "ms")))
    print(f"\nestimator / networks = {ratio:.2f} (networks' share {100 / ratio:.0f} %), "
          f"{result['people']} people in {n} frames {images[0].shape[1]}x{images[0].shape[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
