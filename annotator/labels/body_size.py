"""A person's metric size as an estimate with its own uncertainty, not whatever the crop network implies.

Why: a monocular crop network knows a body's shape but has to guess its size, and the guess does
not carry over to people and cameras it has not seen (on unseen motion-capture frames BlazePose's
limbs came out 0.76-0.96 of the truth, mean 0.86, while 0.97-1.06 on the bundled clips). Size and
depth are one unknown: a body twice as large twice as far away projects the same. So the size is
fused from every piece of evidence there is, each with its own uncertainty, in log space (sizes
multiply): the network's own size, a population prior of adult bone lengths, and the floor where
the camera's extrinsics place it. The result is applied by scaling the pose about the camera
centre, which keeps its 2D projection and moves the root along its ray
(``ground_plane.rescale``); the posterior's sigma is the size part of the depth uncertainty.

Evidence (log of the size relative to the population's mean adult):

- **network**: the median over the limb bones of (predicted length / population length).
  Its 1-sigma, ``NETWORK_LOG_SIGMA``, is a prior on how far a crop network's metric size may be off
  on unseen people and cameras (the 0.76-0.96 above spans about +-10 %), not fitted to a clip.
- **population**: adult limb lengths are fractions of stature (Drillis, Contini & Bluestein 1964,
  "Body segment parameters", Artificial Limbs 8:44-66, as tabulated in D. A. Winter, *Biomechanics
  and Motor Control of Human Movement*, 4th ed., 2009, fig. 4.1: upper arm 0.186 H, forearm 0.146 H,
  thigh 0.245 H, leg 0.246 H, joint centre to joint centre). Stature: 1650 mm, the world's mean
  of adult men and women (NCD Risk Factor Collaboration, "A century of trends in adult human
  height", eLife 2016;5:e13410: about 171 cm and 159 cm for the 1996 cohorts), 1-sigma 5.6 % in log
  units: about 7 cm within each sex in those data, plus the 12 cm between the sexes, which the
  labeler does not know (sqrt(7^2 + 6^2) = 9.2 cm of 165).
- **floor** (optional): the ground plane's scale (``ground_plane.floor_scale``) with its own
  sigma. It measures this very person (1-2 % where it applies), so where it applies it decides:
  fused with the population's mean it only pulled the measured small people of the bundled clips
  towards the average (root error +22 mm on Demo_MultiPerson at num_aug 5).
- **track** (video): ``temporal.consistency`` gives a track one size, the median of its frames'.

Pure numpy; the pipeline applies it to any model's output with recognisable limb names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

STATURE_MM = 1650.0
STATURE_LOG_SIGMA = 0.056
# limb bone length / stature, joint centre to joint centre (Drillis et al. 1964, Winter 2009)
LIMB_FRACTIONS = {"upper_arm": 0.186, "forearm": 0.146, "thigh": 0.245, "leg": 0.246}
NETWORK_LOG_SIGMA = 0.10
MIN_BONES = 3  # fewer confident limb bones: no size evidence from the network (the prior alone would move it)

_PARTS = {"upper_arm": ("shoulder", "elbow"), "forearm": ("elbow", "wrist"), "thigh": ("hip", "knee"),
          "leg": ("knee", "ankle")}
_SHORT = {"shoulder": "sho", "elbow": "elb", "wrist": "wri", "hip": "hip", "knee": "kne", "ankle": "ank"}


def population_bones_mm() -> dict[str, float]:
    """The population's mean length (mm) of each limb bone kind."""
    return {k: f * STATURE_MM for k, f in LIMB_FRACTIONS.items()}


def limb_bones(names: list[str]) -> list[tuple[int, int, float]]:
    """(joint a, joint b, population length mm) of every limb bone found by name, both sides
    (BlazePose ``left_shoulder``, MeTRAbs/COCO-style ``lsho``)."""
    canon = {re.sub(r"[^a-z]", "", n.lower()): i for i, n in enumerate(names)}
    pop = population_bones_mm()
    out = []
    for kind, (a, b) in _PARTS.items():
        for side, short in (("left", "l"), ("right", "r")):
            ia = canon.get(side + a, canon.get(short + _SHORT[a]))
            ib = canon.get(side + b, canon.get(short + _SHORT[b]))
            if ia is not None and ib is not None:
                out.append((ia, ib, pop[kind]))
    return out


def network_log_size(poses: np.ndarray, names: list[str], confidences: np.ndarray | None = None,
                     min_confidence: float = 0.5) -> np.ndarray:
    """[K] log(size / population mean) implied by poses [K,J,3] (mm): the median over limb bones of
    log(length / population length), bones with both ends confident when confidences [K,J] are
    given (all bones when fewer than ``MIN_BONES`` are); NaN without ``MIN_BONES`` limb bones."""
    poses = np.asarray(poses, np.float64)
    bones = limb_bones(names)
    out = np.full(len(poses), np.nan)
    if len(bones) < MIN_BONES:
        return out
    a = np.array([x for x, _, _ in bones])
    b = np.array([y for _, y, _ in bones])
    ref = np.array([m for _, _, m in bones])
    lengths = np.linalg.norm(poses[:, a] - poses[:, b], axis=-1)
    logs = np.log(np.maximum(lengths, 1e-6) / ref)
    for k in range(len(poses)):
        use = np.isfinite(logs[k]) & (lengths[k] > 1e-6)
        if confidences is not None:
            sure = use & (np.minimum(confidences[k, a], confidences[k, b]) >= min_confidence)
            if sure.sum() >= MIN_BONES:
                use = sure
        if use.sum() >= MIN_BONES:
            out[k] = float(np.median(logs[k, use]))
    return out


def fuse(means: list[np.ndarray], sigmas: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-variance fusion of independent Gaussian estimates, elementwise; NaN means or
    sigmas are left out. Returns (mean, sigma)."""
    num = np.zeros(np.broadcast(*means).shape)
    den = np.zeros_like(num)
    for m, s in zip(means, sigmas, strict=True):
        m, s = np.broadcast_to(m, num.shape), np.broadcast_to(s, num.shape)
        ok = np.isfinite(m) & np.isfinite(s) & (s > 0)
        w = np.where(ok, 1.0 / np.where(ok, s, 1.0) ** 2, 0.0)
        num += w * np.where(ok, m, 0.0)
        den += w
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den, np.sqrt(1.0 / den)


@dataclass
class SizeEstimate:
    """Per person [K]: the factor to scale the pose by about the camera centre (1 = as predicted),
    the posterior log size relative to the population (``exp`` = size in population units; NaN
    where the limbs could not be measured), its 1-sigma (log units: also the relative 1-sigma of
    the depth that the size implies) and whether the floor took part."""

    scale: np.ndarray
    log_size: np.ndarray
    log_sigma: np.ndarray
    grounded: np.ndarray


def estimate(poses: np.ndarray, names: list[str], confidences: np.ndarray | None = None,
             floor_scale: np.ndarray | None = None, floor_log_sigma: np.ndarray | None = None,
             population: bool = True, network_log_sigma: float = NETWORK_LOG_SIGMA) -> SizeEstimate:
    """Each person's size: the floor's where it applies (``floor_scale`` [K], the factor that puts
    the person on the floor, ``ground_plane.floor_scale``, with its log sigma ``floor_log_sigma``
    [K]; NaN where it does not apply), else the network's fused with the population's
    (``population``). A person whose limbs cannot be measured (``network_log_size`` NaN) and who is
    not on the floor keeps the prediction (scale 1), with the network's and the population's
    sigmas combined."""
    net = network_log_size(poses, names, confidences)
    k = len(net)
    floor_scale = np.full(k, np.nan) if floor_scale is None else np.asarray(floor_scale, np.float64)
    floor_sigma = np.full(k, np.nan) if floor_log_sigma is None else np.asarray(floor_log_sigma, np.float64)
    grounded = np.isfinite(floor_scale) & np.isfinite(floor_sigma)
    measured = np.isfinite(net)
    here = np.where(measured, net, 0.0)  # log size as predicted (0: unknown, taken as the population's)
    prior_sigma = STATURE_LOG_SIGMA if population else np.inf
    mean, sigma = fuse([here, np.zeros(k)], [np.where(measured, network_log_sigma, np.inf), np.full(k, prior_sigma)])
    # nothing measured: keep the prediction, with both sigmas' worth of doubt
    lost = ~np.isfinite(mean) | ~measured
    mean = np.where(lost, here, mean)
    sigma = np.where(lost, np.hypot(network_log_sigma, STATURE_LOG_SIGMA), sigma)
    # the floor measures this very person: where it applies it decides (a population's mean would
    # only pull a measured small or tall person towards the average)
    mean = np.where(grounded, here + np.log(np.where(grounded, floor_scale, 1.0)), mean)
    sigma = np.where(grounded, floor_sigma, sigma)
    scale = np.exp(mean - here)
    return SizeEstimate(scale, np.where(measured | grounded, mean, np.nan), sigma, grounded)
