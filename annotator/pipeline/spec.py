"""Job specification: everything ``annotator run`` takes, as dataclasses, loadable from TOML.

Unknown keys and bad values are errors that name the key, so a typo never silently falls back
to a default on a thousand-GPU-hour job.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from annotator.pipeline import redact
from annotator.pipeline.decode import DEFAULT_MAX_PIXELS
from annotator.pipeline.infer import InferenceSettings
from annotator.pipeline.layout import split_version
from annotator.pipeline.plan import KINDS
from annotator.pipeline.rig import RigSpec
from annotator.pipeline.sources import DEFAULT_SHARD_SIZE, is_process_local

RUNNERS = ("ray", "beam")
COMMIT_ON = ("driver", "workers")


class SpecError(ValueError):
    pass


@dataclass
class ComputeSpec:
    """How the stages are laid out on the cluster, and their time limits (see docs/scaling.md)."""

    actors: int = 1
    max_actors: int | None = None  # autoscale the actor pool between actors..max_actors
    cpus_per_actor: float = 0.5  # fractional: leaves CPUs for reading and decoding
    gpus_per_actor: float = 0.0  # 1 on GPU clusters: one model pinned per GPU
    read_cpus: float = 0.25  # per read task (I/O bound)
    # per decode task: one core, as decoding is one CPU-bound thread. 0.5 ran two tasks per core,
    # i.e. twice the worker processes (each ~1.5 s of CPU to start) for no more throughput; on the
    # 2-core bench 3-4 decode processes started beside the first actor, now 1-2
    decode_cpus: float = 1.0
    read_batch: int = 16  # images fetched concurrently per read call
    batch_size: int = 8  # images per decode batch and per inference call
    read_timeout_s: float = 120.0  # per read call (read_batch objects)
    read_retries: int = 2  # transient read errors (not 'file not found')
    batch_timeout_s: float = 600.0  # per inference call; 0 = none
    batch_retries: int = 1  # retries of a timed-out inference call
    shard_attempts: int = 3  # rounds a failing shard gets before it is named as failed
    actor_max_restarts: int = 3  # a crashed inference actor is restarted at most this often
    actor_task_retries: int = 2  # ... and its batch retried at most this often
    commit_threads: int = 8  # shards committing at once (driver threads; with commit_on = workers: tasks in flight)
    # where the Ray runner writes parts: driver (its threads) | workers (Ray tasks: Parquet, sha256 and
    # uploads leave the driver, which keeps deciding what commits; bench/driver.py, docs/scaling.md)
    commit_on: str = "driver"
    commit_cpus: float = 0.25  # per commit task (commit_on = workers)
    actor_start_timeout_s: float = 900.0  # the minimum actor pool must be up within this (GPU nodes boot)
    ray_address: str | None = None  # None: start an embedded local Ray
    no_progress_timeout_s: float = 600.0  # Ray Data aborts a round that moves nothing for this long
    beam_options: dict = field(default_factory=dict)  # runner = "beam": PipelineOptions (runner, project, ...)


@dataclass
class RunSpec:
    input: str
    output: str
    runner: str = "ray"  # ray (Ray Data; embedded local Ray by default) | beam (Apache Beam, DirectRunner by default)
    model: str = "default"
    kind: str = "auto"  # auto | folder | tar | manifest | video
    shard_size: int = DEFAULT_SHARD_SIZE
    video_every: int = 1  # videos: annotate every k-th frame
    video_overlap: int = 8  # videos: frames a shard reads past its end (context of its temporal step)
    temporal: bool = True  # videos: left/right repair, one body scale per track, smoothing (pipeline.sequence)
    max_pixels: int = DEFAULT_MAX_PIXELS
    overwrite: bool = False  # replace an output made with another model/settings/plan
    retry_errors: bool = False  # rerun the error rows of committed shards and recommit them
    append: bool = False  # a rerun that finds new inputs plans them as new shards (pipeline.changes)
    frozen: bool = False  # a rerun keeps the frozen plan as it is: the input is not listed again
    # a new version (pipeline.versions) with a fresh plan even with the same model and settings (another
    # model or settings make one anyway)
    new_version: bool = False
    storage_options: dict = field(default_factory=dict)  # per protocol: {"gs": {...}, "s3": {...}}
    lock_heartbeat_s: float = 30.0
    lock_stale_s: float = 300.0  # a lock without heartbeat for this long may be taken over
    manifest_interval_s: float = 60.0  # how often a running job refreshes _manifest.json
    # the error budget (pipeline/budget.py): the job stops when inference errors pass this share of the
    # images that reached the model; real jobs stay far below (a broken model or node fails every image)
    max_error_rate: float = 0.05
    settings: InferenceSettings = field(default_factory=InferenceSettings)
    compute: ComputeSpec = field(default_factory=ComputeSpec)
    progress: bool = True
    # the labels' licence (the dataset card's ``license``): they derive from the user's images, whose
    # terms annotator cannot know, so "other" until the user says (the model weights' licence is
    # provenance, not this)
    license: str = "other"
    # a calibrated camera rig (``[rig]``, ``pipeline.rig``): INPUT is its folder of synchronised views
    rig: RigSpec | None = None

    def validate(self) -> RunSpec:
        s, c = self.settings, self.compute
        checks = [
            (self.shard_size >= 1, "shard_size must be >= 1"),
            (self.max_pixels >= 1, "max_pixels must be >= 1"),
            (s.num_aug >= 1, "settings.num_aug must be >= 1"),
            (s.average_aug, "settings.average_aug must be true: the dataset stores the mean over augmentations "
                            "(their spread goes into people[].quality)"),
            (0.0 <= s.min_quality <= 1.0, "settings.min_quality must be in [0, 1]"),
            (0.0 <= s.detector_threshold <= 1.0, "settings.detector_threshold must be in [0, 1]"),
            (0.0 < s.detector_nms_iou_threshold <= 1.0, "settings.detector_nms_iou_threshold must be in (0, 1]"),
            (s.antialias_factor >= 1, "settings.antialias_factor must be >= 1"),
            (0.0 < s.default_fov_degrees < 180.0, "settings.default_fov_degrees must be in (0, 180)"),
            (0.0 <= self.max_error_rate <= 1.0, "max_error_rate must be in [0, 1]"),
            (c.actors >= 1, "compute.actors must be >= 1"),
            (c.max_actors is None or c.max_actors >= c.actors, "compute.max_actors must be >= compute.actors"),
            (c.batch_size >= 1, "compute.batch_size must be >= 1"),
            (c.cpus_per_actor >= 0 and c.gpus_per_actor >= 0, "compute resources must be >= 0"),
            (c.read_cpus > 0 and c.decode_cpus > 0, "compute.read_cpus and compute.decode_cpus must be > 0"),
            (c.read_batch >= 1, "compute.read_batch must be >= 1"),
            (c.read_timeout_s > 0, "compute.read_timeout_s must be > 0"),
            (c.batch_timeout_s >= 0, "compute.batch_timeout_s must be >= 0 (0: no timeout)"),
            (min(c.read_retries, c.batch_retries, c.actor_max_restarts, c.actor_task_retries) >= 0,
             "compute retries and restarts must be >= 0"),
            (c.shard_attempts >= 1, "compute.shard_attempts must be >= 1"),
            (c.commit_threads >= 1, "compute.commit_threads must be >= 1"),
            (c.commit_on in COMMIT_ON, f"compute.commit_on must be one of {', '.join(COMMIT_ON)}"),
            (c.commit_cpus > 0, "compute.commit_cpus must be > 0"),
            (c.actor_start_timeout_s >= 1, "compute.actor_start_timeout_s must be >= 1"),
            (c.no_progress_timeout_s > 0 or c.no_progress_timeout_s == -1,
             "compute.no_progress_timeout_s must be > 0 (or -1: never)"),
            (self.kind in KINDS, f"kind must be one of {', '.join(KINDS)}"),
            (self.runner in RUNNERS, f"runner must be one of {', '.join(RUNNERS)}"),
            (self.runner != "ray" or not any(is_process_local(u) for u in (self.input, self.output)),
             "memory:// lives in this process only, out of the Ray workers' reach: use runner = \"beam\" or a "
             "folder"),
            (self.video_every >= 1, "video_every must be >= 1"),
            (self.video_overlap >= 0, "video_overlap must be >= 0"),
            (self.lock_heartbeat_s > 0 and self.lock_stale_s > 2 * self.lock_heartbeat_s,
             "lock_stale_s must be more than twice lock_heartbeat_s"),
            (not (self.overwrite and self.retry_errors), "overwrite and retry_errors exclude each other"),
            (not (self.append and self.frozen), "append and frozen exclude each other"),
            (not (self.new_version and (self.overwrite or self.append or self.frozen or self.retry_errors)),
             "new_version labels everything into a new version: it excludes overwrite, append, frozen and "
             "retry_errors"),
            (split_version(self.output)[1] is None,
             f"output {self.output}: give the output itself; a run writes its newest version, or a new one "
             "(docs: README, versions)"),
            (all(isinstance(v, dict) for v in self.storage_options.values()),
             "storage_options must map a protocol to a table of options, e.g. [storage_options.s3]"),
            *self._rig_checks(),
        ]
        for ok, msg in checks:
            if not ok:
                raise SpecError(msg)
        for name in ("input", "output", "model"):
            # refused, as inside a manifest (sources.CredentialsInURI): the URI is copied into the plan,
            # the summary, the card, file metadata and logs. The message shows it redacted.
            if redact.has_credentials(getattr(self, name)):
                raise SpecError(f"{name} {redact.uri(getattr(self, name))}: credentials inside a URI are not "
                                f"accepted (they would be copied into the plan, summary, card and logs); give "
                                f"them as storage options ([storage_options.<protocol>] in a --spec) or in "
                                f"the environment")
        return self

    def _rig_checks(self) -> list[tuple[bool, str]]:
        r = self.rig
        if r is None:
            return []
        return [(r.window >= 1, "rig.window must be >= 1"), (r.overlap >= 0, "rig.overlap must be >= 0"),
                (r.fps >= 0, "rig.fps must be >= 0 (0: the videos' own rate)"),
                (all(isinstance(v, int) and not isinstance(v, bool) for v in r.offsets.values()),
                 "rig.offsets must map a camera to a whole number of frames, e.g. {cam02 = 3}")]


def _build(cls, data: dict, where: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SpecError(f"unknown key(s) in {where or 'job spec'}: {', '.join(unknown)}; "
                        f"valid: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in data.items():
        f = fields[name]
        nested = ({"settings": InferenceSettings, "compute": ComputeSpec, "rig": RigSpec}.get(name)
                  if cls is RunSpec else None)
        if nested is not None:
            if not isinstance(value, dict):
                raise SpecError(f"[{name}] must be a table")
            kwargs[name] = _build(nested, value, f"[{name}]")
        else:
            kwargs[name] = _coerce(value, f.type, f"{where + '.' if where else ''}{name}")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise SpecError(f"{where or 'job spec'}: {e}") from None


def _coerce(value, type_str, key):
    t = str(type_str)
    if t.startswith("tuple"):
        if not isinstance(value, list | tuple):
            raise SpecError(f"{key} must be a list")
        return tuple(float(v) for v in value)
    base = t.replace(" | None", "")
    if value is None and "None" in t:
        return None
    expected = {"int": int, "float": (int, float), "bool": bool, "str": str, "dict": dict}.get(base)
    if expected is None:
        return value
    if isinstance(value, bool) and base != "bool":
        raise SpecError(f"{key} must be {base}, got {value!r}")
    if not isinstance(value, expected):
        raise SpecError(f"{key} must be {base}, got {value!r}")
    return float(value) if base == "float" else value


def from_dict(data: dict) -> RunSpec:
    return _build(RunSpec, data, "").validate()
