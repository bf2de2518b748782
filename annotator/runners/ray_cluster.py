"""Connecting to Ray: an embedded local Ray that stays on loopback, or a cluster by address; its
start-up chatter and its workers' output kept off the user's terminal, in the engine log
(``pipeline.enginelog``); and whether the cluster holds the actor pool.
Used by the Ray Data runner (``ray_data``)."""

from __future__ import annotations

import logging
import os

from annotator.pipeline import enginelog, redact
from annotator.pipeline.spec import ComputeSpec
from annotator.runners.job import ClusterError
from annotator.runners.metrics import metrics_port

# Environment the workers need as well (emulators, gcsfs switches, endpoints). Never secrets: Ray
# writes a runtime_env in plain text into every node's runtime_env_agent.log (seen: the AWS keys).
# An embedded Ray's workers inherit the driver's environment anyway; a cluster's nodes use their
# own credentials, the spec's storage options (task arguments, not logged), or `annotator submit
# --env` values (a file in the job's working directory, ``runners.job_env``).
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
    quiet_ray_logs()  # Ray's logger exists from its import: what ray.init says goes to the engine log too
    if address:
        ray.init(address=address, **kwargs)
    else:
        # its metrics agent serves the job's live metrics (``runners.metrics``) on 127.0.0.1, at
        # ANNOTATOR_METRICS_PORT where a Prometheus is told to look, else on a port Ray picks
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, _metrics_export_port=metrics_port(), **kwargs)
    quiet_ray_logs()
    try:  # where Ray keeps every process's own log (the engine log points there)
        logging.getLogger(__name__).info("Ray session: %s", ray._private.worker._global_node.get_session_dir_path())
    except AttributeError:
        pass
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


RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "ray.serve")
WORKER_LINES = "annotator_engine_log"  # our handler's name in Ray's worker-output dispatcher


def quiet_ray_logs() -> None:
    """Keep Ray's chatter (token-auth notice, "progress bars disabled", per-dataset INFO, the core
    worker's notices) and its workers' forwarded output (TensorFlow's start-up lines from every
    inference actor, task-failure tracebacks Ray retries) off the user's terminal: into the engine
    log when the CLI keeps one (``pipeline.enginelog``), which ``-v`` turns back to the terminal.
    Ray's session directory keeps its own copy of everything either way."""
    stream = enginelog.engine_stream()
    if stream is None:
        if not logging.getLogger().isEnabledFor(logging.INFO):  # a library caller without the CLI's log
            # Ray's notice that token authentication is on (its default) is not news to our users
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
            import ray.data  # noqa: F401 - configures the "ray.data" logger, whose console handler we quieten

            for handler in logging.getLogger("ray.data").handlers:
                if not hasattr(handler, "baseFilename"):  # console only; Ray's session log files keep everything
                    handler.setLevel(logging.ERROR)
        return
    import ray

    if ray.is_initialized():
        import ray.data  # noqa: F401 - configures the "ray.data" logger (its own console handler)
    for name in RAY_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and not hasattr(handler, "baseFilename"):
                handler.setStream(stream)
                if not any(isinstance(f, redact.LogFilter) for f in handler.filters):
                    handler.addFilter(redact.LogFilter())
    if ray.is_initialized():
        _forward_worker_lines(stream)


def _forward_worker_lines(stream) -> None:
    """Ray's driver prints what its workers write (``log_to_driver``) to ``sys.stderr``; take over
    that printer so the lines land in ``stream``, prefixed as Ray prefixes them."""
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:  # another Ray: its printer stays (the lines reach the terminal, nothing is lost)
        return

    def write(data: dict) -> None:
        pid, lines = data.get("pid"), data.get("lines", ())
        if pid == "autoscaler":  # its status every 5 s: only its events, as Ray prints them (monitor.log has all)
            try:
                from ray._private.worker import filter_autoscaler_events

                lines = list(filter_autoscaler_events(lines))
            except Exception:  # noqa: BLE001 - Ray's filter changed: the session's monitor.log keeps them
                lines = []
        who = "" if pid in ("raylet", "autoscaler") else f"{data.get('actor_name') or data.get('task_name') or ''} pid="
        prefix = f"({who}{pid}, ip={data.get('ip')})"
        stream.write("".join(f"{prefix} {redact.text(line)}\n" for line in lines))
    dispatcher.remove_handler("ray_print_logs")
    dispatcher.remove_handler(WORKER_LINES)
    dispatcher.add_handler(WORKER_LINES, write)
