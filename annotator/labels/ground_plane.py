"""People stand on the floor: a known ground plane fixes monocular depth and body scale.

Why: a monocular estimate knows a person's shape but not their size; its depth is only as good as
the crop model's guess of metric scale (a body predicted 3 % small sits 3 % too near, ~100 mm at
3.5 m). With a calibrated camera (extrinsics) and a known floor, the ray through a standing
person's foot meets the floor at one point: that fixes the depth, and with it the scale.

How: scaling an absolute pose about the camera centre C, ``P' = C + s (P - C)``, leaves its 2D
projection unchanged, so it only decides depth and size. ``s`` is chosen so that the grounded foot
point lies at its height above the floor. The candidates are every foot landmark the skeleton has
(toe tips, heels, ankles), each with a height that is a lower bound of where that landmark sits on
a standing person; the one whose ray meets its height nearest the camera decides (a lifted foot,
or a landmark sitting higher than its bound, meets it further away). Applied only when the geometry is sound: the
person is upright (ankles to shoulders within ``max_tilt_degrees`` of up), the ankle
is confident and in the image, the ray points down at the floor steeply enough to be well
conditioned, and ``s`` is within ``scale_range``. Otherwise the monocular answer stays.

Pure numpy: the pipeline applies it to any model's output (ours or an official MeTRAbs), and the
multi-view evaluation measures it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

# Lower bounds (mm above the floor) of foot landmarks on a standing, barefoot adult, from anatomy
# (the lateral malleolus is at 0.039 x stature, Drillis & Contini: ~62 mm at 1.6 m; the heel's
# back point and the toe tip sit on the sole's curve). Lower bounds, because the nearest floor
# intersection wins (module doc): a landmark assumed too low is outvoted, one assumed too high is
# not. Not fitted to any clip.
FOOT_HEIGHTS_MM = {"toe": 15.0, "heel": 30.0, "ankle": 65.0}
ANKLE_HEIGHT_MM = FOOT_HEIGHTS_MM["ankle"]
# Height uncertainty (1 sigma, mm) of the grounded ankle: ankle height, shoes, 2D error of the foot.
FOOT_HEIGHT_SIGMA_MM = 30.0


@dataclass(frozen=True)
class GroundPlane:
    """The floor in the world frame: points X with ``X . up = height_mm`` (``up`` is normalised)."""

    up: tuple[float, float, float] = (0.0, 0.0, 1.0)
    height_mm: float = 0.0
    max_tilt_degrees: float = 35.0
    min_ray_slope: float = 0.1  # |sin| of the foot ray's angle below the horizon
    scale_range: tuple[float, float] = (0.75, 1.35)
    min_confidence: float = 0.5

    @property
    def unit_up(self) -> np.ndarray:
        u = np.asarray(self.up, np.float64)
        return u / np.linalg.norm(u)


@dataclass
class GroundResult:
    """Per person [K]: the corrected world poses, the factor applied (1 where not), whether the
    floor was used, and the factor's 1-sigma in log units (NaN where the floor was not used)."""

    poses: np.ndarray
    scale: np.ndarray
    applied: np.ndarray
    log_sigma: np.ndarray


def _find(names: list[str], *patterns: str) -> int | None:
    for i, n in enumerate(names):
        s = re.sub(r"[^a-z]", "", n.lower())
        if any(re.fullmatch(p, s) for p in patterns):
            return i
    return None


def _joints(names: list[str]) -> dict[str, int | None]:
    return {
        "l_ankle": _find(names, "leftankle", "lank", "lankle"),
        "r_ankle": _find(names, "rightankle", "rank", "rankle"),
        "l_shoulder": _find(names, "leftshoulder", "lsho", "lshoulder"),
        "r_shoulder": _find(names, "rightshoulder", "rsho", "rshoulder"),
    }


def foot_points(names: list[str]) -> list[tuple[int, float]]:
    """(joint index, lower-bound height mm) of every foot landmark: toe tips, heels, ankles
    (BlazePose ``left_foot_index``/``left_heel``, MeTRAbs ``ltoe``/``lhee``/``lank``, ...)."""
    out = []
    for i, n in enumerate(names):
        s = re.sub(r"[^a-z]", "", n.lower())
        if re.fullmatch(r"(left|right|l|r)(footindex|toe|bigtoe|btoe|toes)|(left|right)foottip", s):
            out.append((i, FOOT_HEIGHTS_MM["toe"]))
        elif re.fullmatch(r"(left|right|l|r)(heel|hee|hel)", s):
            out.append((i, FOOT_HEIGHTS_MM["heel"]))
        elif re.fullmatch(r"(left|right|l|r)(ankle|ank)", s):
            out.append((i, FOOT_HEIGHTS_MM["ankle"]))
    return out


def camera_centre(extrinsics: np.ndarray) -> np.ndarray:
    """World position of the camera (mm) from a world->camera 4x4 matrix."""
    rot, trans = extrinsics[:3, :3], extrinsics[:3, 3]
    return -rot.T @ trans


# an axis this far from the image's up (degrees) is doubtful as the world's up for this camera;
# one this near is a likelier up (a camera is seldom rolled or pitched by more)
UP_DOUBT_DEGREES = 45.0
UP_FIT_DEGREES = 30.0


def up_angle_degrees(extrinsics: np.ndarray, up) -> float:
    """The angle (degrees, 0-180) between the world's ``up`` as the camera of ``extrinsics``
    (world -> camera) sees it and the image's up (camera -y): 0 for a level camera with the right
    up. The estimator turns each crop so that ``up`` is up in it (MeTRAbs), so a wrong up turns
    the crops."""
    u = np.asarray(extrinsics, np.float64)[:3, :3] @ np.asarray(up, np.float64)
    cos = -u[1] / max(float(np.linalg.norm(u)), 1e-12)
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


def likelier_up(extrinsics: np.ndarray, up) -> tuple[float, float, float] | None:
    """The world axis (+-X, +-Y, +-Z) to suggest instead of ``up`` for the camera of
    ``extrinsics``, or None: when ``up`` is more than ``UP_DOUBT_DEGREES`` from the image's up
    while an axis is within ``UP_FIT_DEGREES`` of it. Why: a Z-up world (motion-capture labs,
    Human3.6M) labelled with the default -Y up gets every crop turned by 90 degrees and wrong labels,
    silently; this is the hint the run summary counts. A camera that is truly rolled or looks
    straight down can be flagged too, so it is a hint, never applied."""
    if up_angle_degrees(extrinsics, up) <= UP_DOUBT_DEGREES:
        return None
    axes = [tuple(float(v) + 0.0 for v in s * row) for row in np.eye(3) for s in (1.0, -1.0)]  # + 0.0: no -0
    best = min(axes, key=lambda a: up_angle_degrees(extrinsics, a))
    return best if up_angle_degrees(extrinsics, best) <= UP_FIT_DEGREES else None


def root_depth(poses: np.ndarray, extrinsics: np.ndarray | None) -> np.ndarray:
    """Depth (camera z, mm) [K] of each pose's joint centroid; poses in the world frame when
    ``extrinsics`` is given, else in the camera frame."""
    centre = poses.mean(axis=-2)
    if extrinsics is None:
        return centre[..., 2]
    return centre @ extrinsics[2, :3] + extrinsics[2, 3]


def rescale(poses: np.ndarray, extrinsics: np.ndarray | None, scale: np.ndarray) -> np.ndarray:
    """Scale poses [..., J, 3] about the camera centre by ``scale`` (broadcast over the leading axes):
    the 2D projection stays, depth and size change. World frame with ``extrinsics``, else camera."""
    centre = np.zeros(3) if extrinsics is None else camera_centre(np.asarray(extrinsics, np.float64))
    s = np.asarray(scale, np.float64)[..., None, None]
    return (centre + s * (np.asarray(poses, np.float64) - centre)).astype(np.asarray(poses).dtype)


def floor_scale(poses: np.ndarray, names: list[str], extrinsics: np.ndarray, plane: GroundPlane,
                confidences: np.ndarray | None = None, poses2d: np.ndarray | None = None,
                image_size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per person [K]: the factor that puts the grounded foot on the floor (scaling about the camera
    centre) and its 1-sigma in log units, from ``FOOT_HEIGHT_SIGMA_MM`` along the foot's ray; NaN
    (both) where the floor does not apply (not upright, no confident in-image foot, a ray too flat,
    a factor outside ``scale_range``). Arguments as ``apply``."""
    poses = np.asarray(poses, np.float64)
    k = poses.shape[0]
    scale = np.full(k, np.nan)
    log_sigma = np.full(k, np.nan)
    idx = _joints(names)
    if any(idx[j] is None for j in idx):
        return scale, log_sigma
    up = plane.unit_up
    centre = camera_centre(np.asarray(extrinsics, np.float64))
    ankles = [idx["l_ankle"], idx["r_ankle"]]
    shoulders = [idx["l_shoulder"], idx["r_shoulder"]]
    feet = foot_points(names)
    cos_tilt = math.cos(math.radians(plane.max_tilt_degrees))
    for i in range(k):
        p = poses[i]
        axis = p[shoulders].mean(0) - p[ankles].mean(0)
        norm = np.linalg.norm(axis)
        if norm < 1e-6 or axis @ up / norm < cos_tilt:
            continue  # not upright
        candidates = []
        for j, foot_height in feet:
            if confidences is not None and confidences[i, j] < plane.min_confidence:
                continue
            if poses2d is not None and image_size is not None:
                u, v = poses2d[i, j]
                if not (0 <= u < image_size[0] and 0 <= v < image_size[1]):
                    continue
            ray = p[j] - centre
            down = -(ray @ up) / max(np.linalg.norm(ray), 1e-9)
            if down < plane.min_ray_slope:
                continue  # the ray meets the floor far away or not at all: ill conditioned
            s = (plane.height_mm + foot_height - centre @ up) / (ray @ up)
            candidates.append((s, down, np.linalg.norm(ray)))
        if not candidates:
            continue
        s, down, dist = min(candidates)
        if not plane.scale_range[0] <= s <= plane.scale_range[1]:
            continue
        # a foot-height error dh moves the floor point along the ray by dh / down: relative dh / (down |ray'|)
        scale[i], log_sigma[i] = s, FOOT_HEIGHT_SIGMA_MM / (down * dist * s)
    return scale, log_sigma


def apply(poses: np.ndarray, names: list[str], extrinsics: np.ndarray, plane: GroundPlane,
          confidences: np.ndarray | None = None, poses2d: np.ndarray | None = None,
          image_size: tuple[int, int] | None = None) -> GroundResult:
    """Put each standing person's grounded foot on the floor by scaling about the camera centre
    (the floor alone; the pipeline weighs it in ``body_size.estimate``). Arguments: poses [K,J,3]
    world frame (mm); names: J joint names (BlazePose, MeTRAbs or COCO style); extrinsics:
    world->camera 4x4; confidences [K,J] and poses2d [K,J,2] with ``image_size`` (width, height),
    when known, keep unsure or out-of-image feet from deciding."""
    poses = np.asarray(poses, np.float64)
    scale, log_sigma = floor_scale(poses, names, extrinsics, plane, confidences, poses2d, image_size)
    applied = np.isfinite(scale)
    scale = np.where(applied, scale, 1.0)
    return GroundResult(rescale(poses, extrinsics, scale), scale, applied, log_sigma)
