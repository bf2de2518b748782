"""How far off each label may be: a 1-sigma per joint (``joint_sigma_mm``) and for the root's depth
(``depth_sigma_mm``), calibrated so that they hold (68 % of errors within 1 sigma, 95 % within 2).

Why: a pseudo-label is only as useful as its error bar. A training loop weights its loss by
``1 / sigma^2`` or drops labels whose sigma is large; both need sigmas that mean what they say.

Meaning (what ``annotator eval`` checks): ``depth_sigma_mm``: the signed error of the root's camera
depth is within 1 sigma 68 % of the time, within 2 sigma 95 %. ``joint_sigma_mm[j]``: the same for
the distance (3D, mm) between joint j's root-relative position and the truth's. Measured on the
bundled clips, the distances divided by a well-shaped sigma have their 95th percentile at 2.0-2.2
times their 68th (errors are largely along the viewing ray, so nearly one-dimensional), so one
sigma serves both levels; an isotropic 3D Gaussian would give 1.5.

What the sigmas are made of:

- **depth** (root, camera z): the size uncertainty (``body_size``: depth and size are one unknown,
  so a relative size sigma is a relative depth sigma), the augmentations' spread of the root depth,
  and a base term for where the root sits relative to the evidence that placed the body.
- **joints** (root-relative): the network's shape error, which grows as the quality score falls
  (``quality`` ranks errors; ``quality_power``) and differs by kind of joint (hands and feet
  move most), the augmentations' spread of that joint, and the size uncertainty times the
  joint's distance from the root (a larger body has longer offsets).

Each sigma is ``sqrt(sum of squared terms)``. The terms' shapes come from the geometry above;
the few constants in ``CALIBRATION`` (how far the size sigma must be widened, for a size from the
network and the population and for one the floor took part in; the bases per kind of joint; the
quality power; the spread's weight) are fitted by ``bench/uncertainty.py`` on one
bundled clip and checked on the other, then the other way round (docs/models.md, "Body size and uncertainty");
the shipped values are the fit on both.

Pure numpy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from annotator.labels import ground_plane

# kinds of joint, by how far they are from the trunk (a root-relative error grows along the chain)
KINDS = ("trunk", "head", "middle", "end")


def joint_kind(name: str) -> str:
    """'trunk' (hips, shoulders, pelvis, neck, spine), 'head', 'middle' (elbows, knees) or 'end'
    (wrists, hands, ankles, feet) for BlazePose, MeTRAbs/COCO-style and H36M names."""
    s = re.sub(r"[^a-z]", "", name.lower())
    if re.search(r"(wri|wrist|hand|pinky|index|thumb|ank|ankle|heel|toe|foot|hee)", s):
        return "end"
    if re.search(r"(elb|elbow|kne|knee)", s):
        return "middle"
    if re.search(r"(nose|eye|ear|mouth|head|htop)", s):
        return "head"
    return "trunk"


@dataclass(frozen=True)
class Calibration:
    """The constants of both sigmas (module doc; fitted by ``bench/uncertainty.py``)."""

    # the size's sigma as ``body_size`` gives it, times size_scale (the network and the population)
    # or size_scale_floor (the floor took part): what the depth and the joints' size term use
    size_scale: float = 1.0
    size_scale_floor: float = 1.0
    # joints: sqrt((base[kind] / quality^quality_power)^2 + (spread_weight spread)^2
    #              + (|offset| size_sigma)^2), mm
    joint_base_mm: tuple[float, float, float, float] = (30.0, 45.0, 55.0, 75.0)  # per KINDS at quality 1
    quality_power: float = 1.0
    spread_weight: float = 1.0
    # depth: sqrt((depth size_sigma)^2 + spread^2 + depth_base_mm^2), mm
    depth_base_mm: float = 60.0

    def size_sigma(self, log_size_sigma: np.ndarray, grounded: np.ndarray | None) -> np.ndarray:
        """The calibrated size sigma (log units) [K]."""
        floor = np.zeros(np.shape(log_size_sigma), bool) if grounded is None else np.asarray(grounded, bool)
        return np.asarray(log_size_sigma, np.float64) * np.where(floor, self.size_scale_floor, self.size_scale)


# fitted on both bundled clips, num_aug 1 and 5, with and without the floor (bench/uncertainty.py,
# bench/results/uncertainty.json; 958 predictions of people, 18,080 joints); fitted on one clip and checked on
# the other in docs/models.md, "Body size and uncertainty"
CALIBRATION = Calibration(size_scale=2.567, size_scale_floor=1.194, joint_base_mm=(35.8, 86.5, 67.3, 92.0),
                          quality_power=2.5, spread_weight=1.0, depth_base_mm=90.0)


def joint_base(names: list[str], calibration: Calibration = CALIBRATION) -> np.ndarray:
    """[J] the shape-error base (mm, quality 1) of each joint by its kind."""
    base = dict(zip(KINDS, calibration.joint_base_mm, strict=True))
    return np.array([base[joint_kind(n)] for n in names], np.float64)


def joint_sigma(rel: np.ndarray, names: list[str], quality: np.ndarray, log_size_sigma: np.ndarray,
                spread: np.ndarray | None = None, grounded: np.ndarray | None = None,
                calibration: Calibration = CALIBRATION) -> np.ndarray:
    """[K,J] 1-sigma (mm) of each root-relative joint's 3D error distance.

    rel [K,J,3]: root-relative joints (mm); quality [K] in (0, 1] (NaN: taken as 0.5); log_size_sigma
    [K]: the size's 1-sigma (log units, ``body_size``), grounded [K] whether the floor set it;
    spread [K,J] (optional): the augmentations' spread of each root-relative joint (mm,
    ``augmentation_spread``)."""
    rel = np.asarray(rel, np.float64)
    q = np.clip(np.nan_to_num(np.asarray(quality, np.float64), nan=0.5), 0.05, 1.0)
    shape = joint_base(names, calibration)[None, :] / q[:, None] ** calibration.quality_power
    size = np.linalg.norm(rel, axis=-1) * calibration.size_sigma(log_size_sigma, grounded)[:, None]
    total = shape ** 2 + size ** 2
    if spread is not None:
        total = total + (calibration.spread_weight * np.asarray(spread, np.float64)) ** 2
    return np.sqrt(total)


def depth_sigma(depth: np.ndarray, log_size_sigma: np.ndarray, spread: np.ndarray | None = None,
                grounded: np.ndarray | None = None, calibration: Calibration = CALIBRATION) -> np.ndarray:
    """[K] 1-sigma (mm) of each root's camera depth ``depth`` [K] (mm): the calibrated size sigma
    (monocular, or where ``grounded`` [K] the floor's) times the depth, the augmentations' depth
    spread [K] (optional) and the base term."""
    size = calibration.size_sigma(log_size_sigma, grounded)
    total = (np.abs(np.asarray(depth, np.float64)) * size) ** 2 + calibration.depth_base_mm ** 2
    if spread is not None:
        total = total + np.asarray(spread, np.float64) ** 2
    return np.sqrt(total)


def augmentation_spread(per_aug: np.ndarray) -> np.ndarray:
    """[K,J] spread (mm) of each root-relative joint over the augmentations of poses [K,A,J,3]: the
    root mean square distance from the augmentations' mean (the root: the joints' centroid);
    zeros for one augmentation."""
    per_aug = np.asarray(per_aug, np.float64)
    if per_aug.shape[1] < 2:
        return np.zeros((per_aug.shape[0], per_aug.shape[2]))
    rel = per_aug - per_aug.mean(axis=2, keepdims=True)
    return np.sqrt(rel.var(axis=1).sum(axis=-1))


@dataclass
class Sigmas:
    """Per person: ``joint`` [K,J] and ``depth`` [K] sigmas (mm), and ``terms``, what they were made
    of (``log_size_sigma`` [K], ``depth_mm`` [K], ``depth_spread_mm`` [K] and ``joint_spread_mm``
    [K,J], None with one augmentation): the calibration is fitted on these (``eval.uncertainty``)."""

    joint: np.ndarray
    depth: np.ndarray
    terms: dict

    def take(self, keep: np.ndarray) -> Sigmas:
        return Sigmas(self.joint[keep], self.depth[keep],
                      {k: None if v is None else v[keep] for k, v in self.terms.items()})


def for_people(per_aug: np.ndarray, names: list[str], quality: np.ndarray, log_size_sigma: np.ndarray,
               grounded: np.ndarray, extrinsics: np.ndarray | None) -> Sigmas:
    """Both sigmas of people given as poses per augmentation [K,A,J,3] (mm; world frame with
    ``extrinsics``, else camera), their quality [K] and size sigma [K], and whether the floor set
    their size [K]."""
    per_aug = np.asarray(per_aug, np.float64)
    mean = per_aug.mean(axis=1)
    several = per_aug.shape[1] > 1
    depth = ground_plane.root_depth(per_aug, extrinsics)  # [K,A]
    spread = augmentation_spread(per_aug) if several else None
    depth_spread = depth.std(axis=1) if several else None
    joint = joint_sigma(mean - mean.mean(axis=1, keepdims=True), names, quality, log_size_sigma, spread, grounded)
    return Sigmas(joint, depth_sigma(depth.mean(axis=1), log_size_sigma, depth_spread, grounded),
                  {"log_size_sigma": np.asarray(log_size_sigma, np.float64), "depth_mm": depth.mean(axis=1),
                   "depth_spread_mm": depth_spread, "joint_spread_mm": spread})
