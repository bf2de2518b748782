"""What several command groups parse alike."""

from __future__ import annotations

import argparse


def vector3(text: str) -> tuple[float, float, float]:
    values = tuple(float(x) for x in text.split(","))
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected X,Y,Z, got {text!r}")
    return values  # type: ignore[return-value]


def add_people_filters(p: argparse.ArgumentParser) -> None:
    """The per-person thresholds ``filter`` and ``export`` share."""
    p.add_argument("--min-quality", type=float, help="keep people with quality >= Q")
    p.add_argument("--min-score", type=float, help="keep people with detector score >= S")
    p.add_argument("--keep-emptied", action="store_true", help="keep rows whose people were all removed")
