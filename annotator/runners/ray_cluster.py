"""Connecting to Ray: an embedded local Ray that stays on loopback, or a cluster by address; its
start-up chatter kept off the user's terminal; and whether the cluster holds the actor pool.
Used by the Ray Data runner (``ray_data``)."""

from __future__ import annotations

import logging
import os

from annotator.pipeline.spec import ComputeSpec
from annotator.runners.job import ClusterError

# Environment the workers need as well (emulators, gcsfs switches, endpoints). Never secrets: Ray
# writes a runtime_env in plain text into every node's runtime_env_agent.log (seen: the AWS keys).
# An embedded Ray's workers inherit the driver's environment anyway; a cluster's nodes use their
# own credentials, or the spec's storage options (task arguments, not logged).
PROPAGATED_ENV = ("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "STORAGE_EMULATOR_HOST", "AWS_ENDPOINT_URL",
                  "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "GOOGLE_APPLICATION_CREDENTIALS",
                  "TF_CPP_MIN_LOG_LEVEL")


def init_ray(address: str | None, num_cpus: int | None = None, num_gpus: int | None = None) -> bool:
    """Connect to ``address`` (else ``RAY_ADDRESS``, as inside a submitted Ray job) or start an
    embedded local Ray that stays on loopback; True when this process started its own Ray.

    Never a bare ``ray.init()``: that joins whatever cluster last wrote ``/tmp/ray/ray_current_cluster``
    on this machine (another user's, or a test's), so a local run could land on a stranger's cluster."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        # read when Ray is imported, and by every process the embedded Ray starts: with it, nodes
        # take 127.0.0.1 (without it Ray picks the machine's outward address). Not for a cluster:
        # there the driver must find its node's real address.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        # nor does the embedded Ray report usage to usage-stats.ray.io (a job's data stays put)
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return False
    env = {k: os.environ[k] for k in PROPAGATED_ENV if k in os.environ}
    kwargs = {"include_dashboard": False, "log_to_driver": True, "logging_level": logging.WARNING,
              "configure_logging": True, "runtime_env": {"env_vars": env} if env else None}
    quiet = not logging.getLogger().isEnabledFor(logging.INFO)
    if quiet:  # Ray's notice that token authentication is on (its default) is not news to our users
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, **kwargs)
    quiet_ray_logs()
    return address is None


def check_cpus(c: ComputeSpec, cluster_cpus: float, fixed: bool) -> None:
    """Fail fast where the actor pool would take every CPU: Ray would then never schedule a read
    or decode task and the job would wait, silently, until the no-progress timeout. Only for a
    cluster that cannot grow (the embedded local Ray); an autoscaling one may add nodes."""
    need = c.actors * c.cpus_per_actor + max(c.read_cpus, c.decode_cpus)
    if fixed and need > cluster_cpus + 1e-9:
        raise ClusterError(
            f"{c.actors} actor(s) x {c.cpus_per_actor:g} CPU leave no room for read ({c.read_cpus:g} CPU) and "
            f"decode ({c.decode_cpus:g} CPU) tasks on this Ray's {cluster_cpus:g} CPUs: the job would never "
            f"start. Lower --cpus-per-actor (the actor uses all cores whatever it reserves), --actors, or "
            f"compute.decode_cpus in a --spec.")


def pool_fits(c: ComputeSpec, actors: int, resources: dict) -> bool:
    """Whether a cluster with ``resources`` (``ray.cluster_resources()``) holds ``actors`` inference
    actors: their CPUs and GPUs, whatever else runs there now."""
    return (actors * c.cpus_per_actor <= float(resources.get("CPU", 0)) + 1e-9
            and actors * c.gpus_per_actor <= float(resources.get("GPU", 0)) + 1e-9)


def quiet_ray_logs() -> None:
    """Keep Ray's start-up chatter (token-auth notice, "progress bars disabled", per-dataset INFO)
    out of the user's terminal: annotator prints its own progress and summary. ``-v`` restores it."""
    if logging.getLogger().isEnabledFor(logging.INFO):
        return
    import ray.data  # noqa: F401 - configures the "ray.data" logger, whose console handler we quieten

    for handler in logging.getLogger("ray.data").handlers:
        if not hasattr(handler, "baseFilename"):  # console only; Ray's session log files keep everything
            handler.setLevel(logging.ERROR)
