"""``annotator doctor``: check a Ray cluster (or this machine) before a long job, node by node.

Why: a job finds out that a node cannot run it (TensorFlow without the GPU, a model cache that
lacks the model, credentials that cannot write the output, another Ray or TensorFlow version) only
after planning and actor start-up, and then as a stream of failed shards. The doctor runs the same
steps as an inference actor on every node that would host one, in one Ray task per node pinned
there (``NodeAffinitySchedulingStrategy``), with the job's own spec and storage options, and names
each node and what is wrong with it.

Per node: TensorFlow's version and the GPUs it sees with memory growth on (as every actor turns it
on: ``infer.enable_gpu_memory_growth``; with a GPU, ``bench/gpu.sh``'s checks: growth on for every
GPU and the model's memory really on the GPU); the model resolved as the actors resolve it (no
build, the driver's sha256), loaded, and one bundled image labelled, timed; the input listed and a
probe object written, read back and removed under the output; the node's object store; Ray,
TensorFlow, annotator and Python versions, which must be the same on every node.
"""

from __future__ import annotations

import os
import platform
import posixpath
import socket
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from annotator.pipeline import errors
from annotator.pipeline.spec import RunSpec

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "images" / "astronaut.png"
VERSIONED = ("ray", "tensorflow", "annotator", "python")
PROBE_DIR = "_doctor"


@dataclass
class NodeReport:
    node: str  # Ray node id
    ip: str
    checks: list[tuple[str, bool, str]] = field(default_factory=list)  # (check, ok, detail)
    versions: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.ip} {self.node[:8]}"

    def add(self, check: str, ok: bool, detail: str) -> None:
        self.checks.append((check, ok, detail))


def _check(report: dict, name: str, fn) -> object:
    """Run one check: its detail, or the exception's one line (a failed check never ends the rest)."""
    try:
        ok, detail, value = fn()
    except Exception as e:  # noqa: BLE001 - the doctor reports what fails, it does not fail itself
        ok, detail, value = False, errors.describe(e), None
    report["checks"].append((name, ok, detail))
    return value


def node_checks(model: str, expected_sha256: str | None, settings, image: bytes, gpus_wanted: float,
                input_uri: str, output_uri: str, storage_options: dict | None) -> dict:
    """What one node reports (runs in a Ray task on that node; imports TensorFlow)."""
    import ray

    from annotator import __version__
    from annotator.models import loader
    from annotator.pipeline import decode, infer, sources

    report: dict = {"host": socket.gethostname(), "checks": [],
                    "versions": {"ray": ray.__version__, "annotator": __version__,
                                 "python": platform.python_version()}}

    def tensorflow():
        import tensorflow as tf

        report["versions"]["tensorflow"] = tf.__version__
        gpus = infer.enable_gpu_memory_growth()
        if not gpus:
            if gpus_wanted > 0:
                return False, (f"TensorFlow {tf.__version__} sees no GPU, Ray offers {gpus_wanted:g} per actor here "
                               f"(CPU-only TensorFlow build, CUDA libraries or driver missing?)"), []
            return True, f"TensorFlow {tf.__version__}, no GPU (actors run on CPU)", []
        growth = [tf.config.experimental.get_memory_growth(g) for g in tf.config.list_physical_devices("GPU")]
        if not all(growth):
            return False, f"memory growth off on {growth.count(False)} of {len(gpus)} GPU(s) (ray #13680)", gpus
        return True, f"TensorFlow {tf.__version__}, {len(gpus)} GPU(s) {', '.join(gpus)}, memory growth on", gpus
    gpus = _check(report, "tensorflow", tensorflow)

    def label():
        started = time.perf_counter()
        resolved = loader.resolve(model, build_missing=False, storage_options=storage_options)
        if expected_sha256 and resolved.sha256 != expected_sha256:
            return False, (f"{model}: sha256 {resolved.sha256[:12]} here, {expected_sha256[:12]} on the driver "
                           f"(another copy of the model)"), None
        inference = infer.PoseInference(resolved.path, settings)
        inference.warm_up()
        loaded = time.perf_counter() - started
        d = decode.decode(image)
        started = time.perf_counter()
        pred = inference([infer.ImageInput(d.image, d.camera.intrinsics, d.camera.distortion, None)])[0]
        took = time.perf_counter() - started
        detail = (f"{resolved.model_id} ({resolved.sha256[:12]}): loaded and warmed up in {loaded:.1f} s, one "
                  f"{d.width}x{d.height} image in {took:.2f} s, {len(pred.boxes)} person(s) found")
        if gpus:  # bench/gpu.sh: the model's memory is on the GPU, grown on demand
            import tensorflow as tf

            peak = tf.config.experimental.get_memory_info("GPU:0")["peak"]
            if peak <= 0:
                return False, detail + "; nothing allocated on GPU:0: the model ran on the CPU", None
            detail += f"; GPU:0 peak {peak / 2**20:.0f} MiB"
        return True, detail, None
    _check(report, "model", label)

    if input_uri:
        def listable():
            fs, path = sources.filesystem(input_uri, storage_options)
            info = fs.info(path)
            if info.get("type") == "directory":
                return True, f"{len(fs.ls(path, detail=False))} entries under {input_uri}", None
            return True, f"a file of {info.get('size')} bytes", None
        _check(report, "input", listable)
    if output_uri:
        _check(report, "output", lambda: probe_output(output_uri, storage_options))
    return report


def probe_output(output_uri: str, storage_options: dict | None) -> tuple[bool, str, None]:
    """Write, read back and remove a probe object under the output, with the job's options; the
    folders it had to create go too, so the doctor leaves the output as it found it."""
    from annotator.pipeline import sources

    fs, root = sources.filesystem(output_uri, storage_options)
    folder = f"{root.rstrip('/')}/{PROBE_DIR}"
    probe = f"{folder}/probe-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    created, parent = [], folder  # a local output's missing folders, deepest first
    while sources.protocol_of(output_uri) == "file" and not fs.exists(parent):
        created.append(parent)
        parent = posixpath.dirname(parent)
    if created:
        fs.makedirs(folder, exist_ok=True)
    payload = uuid.uuid4().hex.encode()
    try:
        with fs.open(probe, "wb") as f:
            f.write(payload)
        if fs.cat_file(probe) != payload:
            return False, f"{probe}: read back other bytes than written", None
        fs.rm_file(probe)
    finally:
        for p in created:
            try:
                fs.rmdir(p)
            except OSError:
                pass
    return True, f"probe object written, read back and removed under {output_uri}", None


def actor_nodes(spec: RunSpec) -> list[dict]:
    """The alive nodes that could host an inference actor: enough CPUs and GPUs for one, in total."""
    import ray

    c = spec.compute
    return [n for n in ray.nodes() if n["Alive"]
            and float(n["Resources"].get("CPU", 0)) + 1e-9 >= c.cpus_per_actor
            and float(n["Resources"].get("GPU", 0)) + 1e-9 >= c.gpus_per_actor]


def run(spec: RunSpec, timeout_s: float = 600.0) -> list[NodeReport]:
    """Check every node that would run an actor (Ray must be initialised); one report per node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from annotator.models import loader
    from annotator.pipeline import sources

    try:  # the sha256 the job would plan with, where the driver has the model (never built here)
        expected = loader.resolve(spec.model, build_missing=False, storage_options=spec.storage_options).sha256
    except Exception:  # noqa: BLE001 - a driver without the model: each node's own copy is compared instead
        expected = None
    image = SAMPLE.read_bytes() if SAMPLE.exists() else _grey_png()
    model = spec.model if loader.is_remote(spec.model) or not os.path.exists(os.path.expanduser(spec.model)) \
        else os.path.abspath(os.path.expanduser(spec.model))
    io = (sources.absolute(spec.input) if spec.input else "", sources.absolute(spec.output) if spec.output else "")
    c = spec.compute
    task = ray.remote(node_checks)
    nodes = actor_nodes(spec)
    refs = {}
    for n in nodes:
        pinned = NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        # the GPUs an actor would get (Ray hides the others: CUDA_VISIBLE_DEVICES), no CPU: a busy
        # cluster's free CPUs are not the doctor's question
        refs[n["NodeID"]] = task.options(num_cpus=0, num_gpus=c.gpus_per_actor or None, max_retries=0,
                                         scheduling_strategy=pinned).remote(
            model, expected, spec.settings, image, c.gpus_per_actor, *io, spec.storage_options)
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s) if refs else ([], [])
    reports = []
    for n in nodes:
        r = NodeReport(n["NodeID"], n["NodeManagerAddress"])
        ref = refs[n["NodeID"]]
        store = float(n["Resources"].get("object_store_memory", 0))
        try:
            if ref not in ready:
                raise TimeoutError(f"no answer within {timeout_s:g} s (node busy or lost?)")
            got = ray.get(ref)
            r.checks, r.versions = [tuple(x) for x in got["checks"]], got["versions"]
        except Exception as e:  # noqa: BLE001 - a node whose task died is named, the others still reported
            if ref not in ready:
                ray.cancel(ref, force=True)
            r.add("node", False, f"the check task failed: {errors.describe(e)}")
        r.add("object store", store > 0, f"{store / 2**30:.2f} GiB")
        reports.append(r)
    compare_versions(reports)
    return reports


def compare_versions(reports: list[NodeReport]) -> None:
    """Ray, TensorFlow, annotator and Python the same on every node: the odd ones out fail."""
    import ray

    from annotator import __version__

    here = {"ray": ray.__version__, "annotator": __version__, "python": platform.python_version()}
    for key in VERSIONED:
        seen = Counter(r.versions.get(key) for r in reports if r.versions.get(key))
        if not seen:
            continue
        usual = here.get(key) if here.get(key) in seen else seen.most_common(1)[0][0]
        for r in reports:
            v = r.versions.get(key)
            if v and v != usual:
                where = "the driver and " if key in here and usual == here[key] else ""
                r.add("versions", False, f"{key} {v} here, {usual} on {where}the other nodes")
    for r in reports:
        if r.versions and not any(c == "versions" for c, _, _ in r.checks):
            r.add("versions", True, ", ".join(f"{k} {r.versions[k]}" for k in VERSIONED if k in r.versions))


def _grey_png() -> bytes:
    """A plain image where the package was installed without ``samples/`` (a wheel)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (256, 256), (128, 128, 128)).save(buf, format="PNG")
    return buf.getvalue()


def format_reports(reports: list[NodeReport]) -> tuple[str, bool]:
    """The table (one line per node and check), then the verdict with its reasons; and whether
    every check passed."""
    rows = [("node", "check", "result", "detail")] + [(r.name, c, "ok" if ok else "FAIL", d)
                                               for r in reports for c, ok, d in r.checks]
    width = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row[:3], width, strict=True)) + "  " + row[3] for row in rows]
    failed = [(r, c, d) for r in reports for c, ok, d in r.checks if not ok]
    if not reports:
        return "\n".join(lines + ["", "FAIL: no alive node can host an inference actor (CPUs/GPUs per actor)"]), False
    if not failed:
        return "\n".join(lines + ["", f"OK: {len(reports)} node(s) ready to run the job"]), True
    bad = sorted({r.name for r, _, _ in failed})
    lines += ["", f"FAIL: {len(bad)} of {len(reports)} node(s) cannot run the job:"]
    lines += [f"  node {r.name}: {c}: {d}" for r, c, d in failed]
    return "\n".join(lines), False
