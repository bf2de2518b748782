"""Evaluation of label quality against data with known geometry (multi-view)."""
