"""annotator: 3D human pose pseudo-labels at cluster scale (MeTRAbs-style estimator, Ray/Beam runners)."""

__version__ = "0.1.0"
