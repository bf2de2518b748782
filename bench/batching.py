"""Per-image vs batched model calls at several batch sizes and num_aug, on the same images.

Per-image = ``detect_poses(image)`` once per image; batched = ``detect_poses_batched`` on batches of
B same-size images with per-image intrinsics (what the pipeline calls). Graph warm-up excluded.
The MeTRAbs reference: batched is ~5x faster per frame than one at a time on an RTX 3090.

    .venv/bin/python bench/batching.py [--images 16] [--batch-sizes 1,2,4,8] [--num-aug 1,5]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402


def per_image(model, images, num_aug: int) -> dict:
    model.detect_poses(images[0], num_aug=num_aug)  # warm-up
    started = time.perf_counter()
    for im in images:
        model.detect_poses(im, intrinsic_matrix=c.default_k(im), num_aug=num_aug)["poses3d"].numpy()
    wall = time.perf_counter() - started
    return {"images": len(images), "seconds": round(wall, 3), "images_per_second": round(len(images) / wall, 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--batch-sizes", default="1,2,4,8")
    ap.add_argument("--num-aug", default="1,5")
    ap.add_argument("--max-side", type=int, default=None)
    ap.add_argument("--model", default="default")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import tensorflow as tf

    from annotator.models import loader

    resolved = loader.resolve(args.model)
    model = tf.saved_model.load(resolved.path)
    work = Path(tempfile.mkdtemp(prefix="bench-batching-"))
    try:
        images = c.decode_all(c.frames(work, args.images, max_side=args.max_side))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"machine": c.machine(), "model": resolved.to_dict(), "images": args.images,
              "image_size": list(images[0].shape[:2]), "runs": []}
    rows = []
    for a in (int(x) for x in args.num_aug.split(",")):
        single = per_image(model, images, a)
        result["runs"].append({"num_aug": a, "mode": "per_image", **single})
        rows.append((a, "per-image", single["images_per_second"], 1.0))
        for b in (int(x) for x in args.batch_sizes.split(",")):
            r = c.bare_batched(model, images, b, a)
            gain = round(r["images_per_second"] / single["images_per_second"], 2)
            result["runs"].append({"num_aug": a, "mode": "batched", "batch_size": b, "gain": gain, **r})
            rows.append((a, f"batched B={b}", r["images_per_second"], gain))
            print(rows[-1], flush=True)
    path = c.save("batching", result, args.out)
    print(c.table(rows, ("num_aug", "call", "images/s", "vs per-image")))
    print(f"\n{args.images} images {result['image_size'][1]}x{result['image_size'][0]}, "
          f"{result['machine']['cores']} cores -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
