"""Shared fixtures: the real default model (built at setup), sample images, a real local Ray.

Tests that run a job or load the model are marked ``slow`` (``-m "not slow"`` is the quick loop;
CI runs everything); collection refuses an unmarked test that asks for the model or Ray.

No network but loopback: pyproject's ``addopts`` has pytest-socket refuse every connection from
the test process except to 127.0.0.0/8, ::1 and unix sockets (Ray, moto and the GCS emulator
listen there), so a test that reaches out fails instead of skipping (tests/test_no_network.py).
Sample data is committed under samples/; nothing is downloaded at test time."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
os.environ.setdefault("RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S", "300")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"


HEAVY_FIXTURES = {"default_model_path", "estimator", "ray_cluster"}


def pytest_collection_modifyitems(config, items):
    unmarked = [item.nodeid for item in items if HEAVY_FIXTURES & set(getattr(item, "fixturenames", ()))
                and item.get_closest_marker("slow") is None]
    if unmarked:
        raise pytest.UsageError("these tests load the model or start Ray: mark them slow: " + ", ".join(unmarked))


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return SAMPLES / "images"


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    """The default model as setup built it (converted locally from the cached npm packages if the
    build is missing or stale; never downloaded here)."""
    from annotator.models import registry

    return registry.path("default", build_missing=True, fetch=False)


@pytest.fixture(scope="session")
def estimator(default_model_path):
    import tensorflow as tf

    return tf.saved_model.load(str(default_model_path))


def load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="session")
def ray_cluster():
    """One real local Ray for the session (2 logical GPUs so GPU pinning can be tested)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=True, logging_level="ERROR")
    ctx = ray.data.DataContext.get_current()
    ctx.execution_no_progress_timeout_s = 300
    ctx.enable_progress_bars = False
    yield ray
    ray.shutdown()
