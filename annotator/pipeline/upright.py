"""Does the world's up fit the cameras? Checked before a run, on a sample of the plan's cameras.

Why: the estimator turns each crop so that the world's up (``--world-up``) is up in it, as MeTRAbs
does. Extrinsics whose world is Z-up (motion-capture labs, Human3.6M) run with the default -Y up get
every crop turned by 90 degrees, and the labels come out wrong without an error. So the run looks
at the cameras it already knows when it plans (a folder's ``camera.json``, a manifest's columns, a
video's or tar's ``.camera.json``) and warns before hours of work; cameras it only meets while
reading (per-image sidecars) are checked per image by the inference stage and counted in the summary
(``world_up_check``). A hint, never applied: a truly rolled camera, or one looking straight down,
is flagged too (``labels.ground_plane.likelier_up``).
"""

from __future__ import annotations

import json
import logging
from collections import Counter

import numpy as np
import pyarrow.compute as pc

from annotator.labels import camera_codec, ground_plane
from annotator.pipeline import plan as plan_mod

log = logging.getLogger(__name__)

SAMPLE = 512  # cameras looked at before a run: enough to see a lab's few cameras, cheap for a million images


def plan_extrinsics(plan: plan_mod.Plan, storage_options: dict | None = None, limit: int = SAMPLE) -> list[np.ndarray]:
    """Up to ``limit`` world -> camera matrices [4,4] that ``plan`` holds: its shards' cameras
    (videos, tars), then the first members chunk's (folders, manifests). A rig's views are its
    calibration's, whose up the run takes from it: none."""
    if plan.kind == "rig":
        return []
    out = []
    given = plan.shards.column("camera")
    for text in given.filter(pc.is_valid(given)).slice(0, limit).to_pylist():
        cam = camera_codec.from_json(text, None)
        if cam.extrinsics is not None:
            out.append(np.asarray(cam.extrinsics, np.float64))
    if len(out) < limit and plan.num_chunks:
        first = plan.shards.slice(0, 1).to_pylist()[0]
        if first.get("chunk") is not None:
            chunk = plan_mod.members(plan.uri, {**first, "offset": 0, "members": limit}, storage_options)
            ext = chunk.column("extrinsics")
            for x in ext.filter(pc.is_valid(ext)).to_pylist()[:limit - len(out)]:
                out.append(np.asarray(x, np.float64).reshape(4, 4))
    return out


def axis_text(v) -> str:
    """A direction as ``--world-up`` takes it ("0,0,1")."""
    return ",".join(f"{x:g}" for x in v)


def advice(extrinsics: list[np.ndarray], up) -> Counter:
    """How many of ``extrinsics`` suggest another world up than ``up``, by axis ("0,0,1")."""
    hints = (ground_plane.likelier_up(x, up) for x in extrinsics)
    return Counter(axis_text(h) for h in hints if h is not None)


def warning(checked: int, hints: dict, up, when: str) -> str | None:
    """The one line a user reads when ``hints`` (axis -> cameras) is not empty; ``when``: "images"
    (after a run) or "cameras of the plan" (before it)."""
    if not hints:
        return None
    axis, n = max(hints.items(), key=lambda kv: kv[1])
    given = axis_text(up)
    return (f"in {sum(hints.values())} of {checked} {when} with extrinsics the world's up ({given}) is more than "
            f"{ground_plane.UP_DOUBT_DEGREES:g} degrees from the image's up, and {axis} fits {n} of them: their "
            f"crops are turned by the up given. If the extrinsics' world is {axis} up (motion-capture labs often "
            f"are), label into a new output with --world-up {axis}")


def check_world_up(plan: plan_mod.Plan, up, storage_options: dict | None = None) -> str | None:
    """Warn (log) before a run when the plan's cameras suggest another world up; returns the line."""
    try:
        cams = plan_extrinsics(plan, storage_options)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:  # a hint: never what stops a run
        log.debug("world-up preflight skipped: %s", e)
        return None
    line = warning(len(cams), dict(advice(cams, up)), up, "cameras of the plan")
    if line:
        log.warning("%s", line)
    return line
