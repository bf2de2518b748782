"""Wall-clock cost of ``detect_poses`` per image, measured the way docs/models.md reports it.

Median over repeated calls on the sample photos after one warm-up call per image size (the first
call traces the graph: tens of seconds, paid once per process). Wall time depends on what else runs
on the machine, so the process CPU time per image (all threads) is reported too: it measures the
work, and on an idle machine wall time is about CPU time / the cores TF keeps busy.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np


def measure(model, images: list[np.ndarray], num_aug: int, repeats: int = 3, **kwargs) -> dict:
    """Median and per-image ms of ``model.detect_poses`` at ``num_aug`` over ``images``."""
    for image in images:  # warm-up: one trace per image shape
        model.detect_poses(image, num_aug=num_aug, **kwargs)
    per_image = []
    cpu = []
    people = []
    for _ in range(repeats):
        for image in images:
            started, cpu_started = time.perf_counter(), time.process_time()
            out = model.detect_poses(image, num_aug=num_aug, **kwargs)
            _ = out["poses3d"].numpy()
            per_image.append((time.perf_counter() - started) * 1000.0)
            cpu.append((time.process_time() - cpu_started) * 1000.0)
            people.append(int(out["boxes"].shape[0]))
    return {"num_aug": num_aug, "median_ms": round(float(np.median(per_image)), 1),
            "mean_ms": round(float(np.mean(per_image)), 1), "median_cpu_ms": round(float(np.median(cpu)), 1),
            "calls": len(per_image), "people_per_image": round(float(np.mean(people)), 2)}


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2)}


def load_images(folder: str | Path) -> list[np.ndarray]:
    from PIL import Image

    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return [np.asarray(Image.open(p).convert("RGB")) for p in files]
