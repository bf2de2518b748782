"""Build-time switches of the estimator, one per MeTRAbs step, so an ablation can measure each.

MeTRAbs freezes its choices into the SavedModel at export (``save_model.py`` flags); we do the same:
an ``EstimatorOptions`` is fixed when a ``PoseEstimator`` is built and recorded in the model's
``annotator_info``. The defaults are the steps that earned their place on the multi-view ablation
(``annotator eval ablate``, table in ``docs/models.md``); the others stay available for measuring.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

AUG_KINDS = ("gamma", "rotation", "scale", "flip")
RECONSTRUCTIONS = ("blend", "translate", "translate_all")
AGGREGATIONS = ("mean", "consensus")
KEEP_LENGTHS = ("bones", "body", "none")


@dataclass(frozen=True)
class EstimatorOptions:
    """What the estimator does around its two networks.

    ``virtual_camera``: crops come from a camera rotated to look straight at the person (MeTRAbs);
        False renders a plain image-plane crop (rotation only about the optical axis), as MediaPipe.
    ``alignment``: a first crop pass gives the crop model's own ROI (BlazePose's hip centre, body
        size and rotation) and the final crops are built around it.
    ``linear_light``: resample in linear light ((x/255)^2.2), then re-encode; False samples the
        encoded values directly.
    ``antialias``: a 3-level 2x2 average pyramid, each crop sampled from the level matching its
        scale; False samples full resolution only (bilinear, aliasing when shrinking).
    ``aug_kinds``: which kinds of test-time augmentation vary across ``num_aug`` crops (the rest stay
        at their identity value: gamma 1, no roll, scale 1, no mirroring).
    ``rotation_degrees``, ``scale_range``: the extent of the rotation (+-degrees) and zoom (lowest,
        highest) augmentations (MeTRAbs: 25 and (0.8, 1.1)).
    ``tta_centred``: the augmentations perturb the single crop (gamma x 0.75-1.25, zoom x the scale
        range; the middle one of an odd num_aug is the single crop) rather than MeTRAbs' fixed
        ranges (gamma 0.6-1, zoom from 1), whose centre is not the single crop (``augment``).
    ``single_crop``: (gamma, zoom) of the one crop of num_aug = 1 (MeTRAbs: its schedule's midpoint,
        (0.8, 1.05); (1, 1) is the identity crop). Default: MeTRAbs' zoom, not its gamma (the
        darker crop earned nothing on the ablation).
    ``reconstruction``: how 2D + root-relative 3D become absolute 3D (``reconstruct.py``):
        ``blend`` (MeTRAbs: in-crop joints average the 3D with the 2D back-projected to its depth),
        ``translate`` (the 3D moved by the in-crop-weighted translation, shape from 3D only),
        ``translate_all`` (as ``translate`` with every joint weighted by its confidence).
    ``aggregation``: how the augmentations' poses are combined (``augment.aggregate``): ``mean``
        (MeTRAbs: mean of absolute poses) or ``consensus`` (left/right labels made to agree with the
        majority, then one reconstruction from the mean 2D and mean root-relative 3D).
    ``keep_lengths``: how the consensus keeps the augmentations' lengths (averaging poses that
        disagree shortens bones): ``bones`` (3D shape and 2D evidence; trunk by one scale, each limb
        bone at its mean length), ``body`` (3D shape only, one scale for the body), ``none``.
    ``keypoint_evidence``: weight of the detector's own keypoints (MoveNet's 17) as extra 2D
        evidence in the consensus reconstruction, relative to the crop model's per-joint confidence
        (0: off). A keypoint counts only where it is confident (score >= 0.3) and within 5 % of the
        box diagonal of the crop model's 2D for the same joint (never across a left/right swap).
    ``pose_nms``: whether ``suppress_implausible_poses`` also runs 3D pose NMS.
    """

    virtual_camera: bool = True
    alignment: bool = True
    linear_light: bool = False
    antialias: bool = True
    aug_kinds: tuple[str, ...] = ("gamma", "scale", "flip")
    rotation_degrees: float = 25.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    single_crop: tuple[float, float] = (1.0, 1.05)
    tta_centred: bool = True
    reconstruction: str = "blend"
    aggregation: str = "consensus"
    keep_lengths: str = "bones"
    keypoint_evidence: float = 0.0
    pose_nms: bool = True

    def __post_init__(self):
        unknown = set(self.aug_kinds) - set(AUG_KINDS)
        if unknown:
            raise ValueError(f"unknown augmentation kinds {sorted(unknown)}; valid: {', '.join(AUG_KINDS)}")
        if self.reconstruction not in RECONSTRUCTIONS:
            raise ValueError(f"reconstruction {self.reconstruction!r}: valid are {', '.join(RECONSTRUCTIONS)}")
        if self.keep_lengths not in KEEP_LENGTHS:
            raise ValueError(f"keep_lengths {self.keep_lengths!r}: valid are {', '.join(KEEP_LENGTHS)}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation {self.aggregation!r}: valid are {', '.join(AGGREGATIONS)}")

    @classmethod
    def metrabs(cls) -> EstimatorOptions:
        """MeTRAbs' own machinery, as published (and as annotator had it before the ablation)."""
        return cls(linear_light=True, aug_kinds=AUG_KINDS, rotation_degrees=25.0, scale_range=(0.8, 1.1),
                   single_crop=(0.8, 1.05), tta_centred=False, reconstruction="blend", aggregation="mean")

    def replace(self, **changes) -> EstimatorOptions:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["aug_kinds"] = list(self.aug_kinds)
        d["scale_range"] = list(self.scale_range)
        d["single_crop"] = list(self.single_crop)
        return d
