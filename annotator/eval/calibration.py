"""Calibration readers moved to ``annotator.pipeline.calibration`` (a rig's calibration is job
input: ``annotator run --rig``); this name keeps the evaluation's and users' imports working."""

from annotator.pipeline.calibration import (  # noqa: F401 - re-exported
    Camera,
    _natural_key,
    camera_from_dict,
    load,
    read,
    read_qca,
    rodrigues,
    world_up,
)
