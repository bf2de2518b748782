"""Running jobs in tests: a test-sized job spec, the ``annotator`` command as a user runs it, and
comparing two outputs row by row."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

ANNOTATOR = Path(sys.executable).with_name("annotator")


def annotator(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``annotator ARGS`` in a subprocess (text output captured)."""
    return subprocess.run([str(ANNOTATOR), *args], capture_output=True, text=True, timeout=timeout)


def job_spec(input: str, output: str, **overrides):
    """A job spec sized for the 2-core test machine and the session Ray (4 logical CPUs)."""
    from annotator.pipeline import spec as spec_mod

    compute = {"actors": 1, "cpus_per_actor": 0.5, "decode_cpus": 0.5, "read_cpus": 0.25, "batch_size": 2,
               "read_batch": 4, "no_progress_timeout_s": 240.0, "shard_attempts": 2, "commit_threads": 2,
               **overrides.pop("compute", {})}
    data = {"input": input, "output": output, "shard_size": 4, "progress": False, "compute": compute,
            "settings": {"num_aug": 1, **overrides.pop("settings", {})}, **overrides}
    return spec_mod.from_dict(data)


def by_id(table) -> dict:
    return {r["image_id"]: r for r in table.to_pylist()}


IMAGE_KEYS = ("source_uri", "shard", "width", "height", "status", "error", "camera_source", "num_people",
              "intrinsics")


def assert_same_labels(got: dict, ref: dict, atol: dict[str, float], rtol: float = 1e-7) -> None:
    """Two outputs (``by_id`` rows) label the same images alike: the same ids, equal image fields, and
    per person each field of ``atol`` within its tolerance (runs batch differently, which changes the
    last bits of the model's float arithmetic)."""
    assert sorted(got) == sorted(ref)
    for image_id, r in ref.items():
        g = got[image_id]
        for key in IMAGE_KEYS:
            assert g[key] == r[key], (image_id, key)
        for pg, pr in zip(g["people"], r["people"], strict=True):
            for key, tol in atol.items():
                np.testing.assert_allclose(pg[key], pr[key], rtol=rtol, atol=tol)
