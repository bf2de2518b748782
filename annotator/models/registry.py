"""Named models and where they live: build once at setup, then load from the local cache.

Layout under ``$ANNOTATOR_CACHE`` (default ``~/.cache/annotator``)::

    npm/<package>-<version>.tgz            pinned, sha256-checked tarballs
    components/<name>/<CONVERTER_VERSION>/  TFJS graphs converted to SavedModels
    models/<variant>/                       MeTRAbs-API SavedModel + annotator_model.json
    locks/                                  build locks, so parallel builders wait, not collide

``build(name)`` fetches with npm only when a tarball is missing; ``path(name, build=False)`` (what
jobs use) never reaches the network and says which command to run when a model is missing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from annotator import __version__
from annotator.models import npm

# Bump when the converter or the estimator graph changes: cached builds are then rebuilt.
CONVERTER_VERSION = "1"
ESTIMATOR_VERSION = "12"
INFO_FILE = "annotator_model.json"


@dataclass(frozen=True)
class Component:
    """One converted network: a TFJS graph inside a pinned npm package."""

    name: str
    package: npm.NpmPackage
    files: tuple[str, ...]
    outputs: tuple[str, ...] | None = None


COMPONENTS = {
    "movenet-multipose": Component(
        "movenet-multipose", npm.HUMAN_MODELS,
        ("models/movenet-multipose.json", "models/movenet-multipose.bin")),
    **{
        f"blazepose-{size}": Component(
            f"blazepose-{size}", npm.HUMAN_MODELS,
            (f"models/blazepose-{size}.json", f"models/blazepose-{size}.bin"),
            outputs=("ld_3d", "world_3d", "output_poseflag"))
        for size in ("lite", "full", "heavy")
    },
}

# The .tflite builds of the same BlazePose weights, kept as references for the converter test.
TFLITE_REFERENCES = {f"blazepose-{s}": f"pose_landmark_{s}.tflite" for s in ("lite", "full", "heavy")}


@dataclass(frozen=True)
class Variant:
    name: str
    detector: str
    crop_model: str
    description: str


VARIANTS = {
    f"default-{size}": Variant(
        f"default-{size}", "movenet-multipose", f"blazepose-{size}",
        f"MoveNet-MultiPose detector + BlazePose GHUM 3D {size} crop model (Apache-2.0 weights)")
    for size in ("lite", "full", "heavy")
}
DEFAULT = "default-full"
ALIASES = {"default": DEFAULT}


class ModelNotBuiltError(FileNotFoundError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("ANNOTATOR_CACHE") or Path.home() / ".cache" / "annotator").expanduser()


def canonical(name: str) -> str:
    name = ALIASES.get(name, name)
    if name not in VARIANTS:
        valid = ", ".join(sorted(VARIANTS) + sorted(ALIASES))
        raise KeyError(f"unknown model {name!r}; built-in models: {valid} (or a SavedModel path/URI)")
    return name


def model_dir(name: str) -> Path:
    return cache_dir() / "models" / canonical(name)


def component_dir(name: str) -> Path:
    return cache_dir() / "components" / name / CONVERTER_VERSION


@contextmanager
def _lock(name: str) -> Iterator[None]:
    lock_dir = cache_dir() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _is_complete(path: Path) -> bool:
    return (path / "saved_model.pb").exists() and (path / INFO_FILE).exists()


def _is_current(path: Path) -> bool:
    return _is_complete(path) and _read_info(path).get("estimator_version") == ESTIMATOR_VERSION


def npm_files(pkg: npm.NpmPackage, members: list[str], fetch: bool = True) -> dict[str, Path]:
    """Files from a pinned npm package, unpacked under the cache (fetching the tarball if allowed)."""
    tarball = cache_dir() / "npm" / pkg.tarball_name
    if not tarball.exists():
        if not fetch:
            raise ModelNotBuiltError(f"{tarball} is missing: run `annotator models build-default`")
        tarball = npm.fetch(pkg, cache_dir())
    return npm.extract(tarball, members, cache_dir() / "unpacked" / f"{pkg.tarball_name[:-4]}")


def build_component(name: str, fetch: bool = True) -> Path:
    """Convert one TFJS component to a SavedModel (cached; safe to call from parallel processes)."""
    comp = COMPONENTS[name]
    out = component_dir(name)
    if _is_complete(out):
        return out
    with _lock(f"component-{name}"):
        if _is_complete(out):
            return out
        from annotator.models import tfjs  # imports TensorFlow: only when converting

        files = npm_files(comp.package, list(comp.files), fetch=fetch)
        json_path = files[comp.files[0]]
        with _build_into(out, ".build-") as sm:
            tfjs.convert(json_path, sm, outputs=list(comp.outputs) if comp.outputs else None)
            info = {"component": name, "npm": comp.package.spec, "npm_sha256": comp.package.sha256,
                    "files": {m: npm.sha256_file(p) for m, p in files.items()},
                    "converter_version": CONVERTER_VERSION}
            (sm / INFO_FILE).write_text(json.dumps(info, indent=2))
    return out


@contextmanager
def _build_into(out: Path, prefix: str) -> Iterator[Path]:
    """A fresh folder to build ``out`` in, beside it; it replaces ``out`` only when the block
    succeeds, so a crash leaves the old build (or none), never half of one."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=out.parent))
    try:
        yield tmp / "sm"
        if out.exists():
            shutil.rmtree(out)
        (tmp / "sm").rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tflite_reference(name: str, fetch: bool = True) -> Path:
    """Path to the MediaPipe ``.tflite`` build of a BlazePose component (for equality tests)."""
    member = TFLITE_REFERENCES[name]
    return npm_files(npm.MEDIAPIPE_POSE, [member], fetch=fetch)[member]


def directory_sha256(path: Path) -> str:
    """Content hash of a SavedModel folder: every file's relative path and bytes, sorted."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(path).rglob("*") if p.is_file() and p.name != INFO_FILE):
        h.update(str(f.relative_to(path)).encode() + b"\0")
        h.update(npm.sha256_file(f).encode())
    return h.hexdigest()


def build(name: str = DEFAULT, fetch: bool = True, force: bool = False) -> Path:
    """Build a named MeTRAbs-API SavedModel from its components (idempotent, locked)."""
    name = canonical(name)
    out = model_dir(name)
    if _is_current(out) and not force:
        return out
    variant = VARIANTS[name]
    det_dir = build_component(variant.detector, fetch=fetch)
    crop_dir = build_component(variant.crop_model, fetch=fetch)
    with _lock(f"model-{name}"):
        if _is_current(out) and not force:
            return out
        import tensorflow as tf

        from annotator.estimator import crop_models, detectors, model, skeletons
        from annotator.estimator.options import EstimatorOptions

        started = time.time()
        components = {c: _read_info(d) for c, d in ((variant.detector, det_dir),
                                                    (variant.crop_model, crop_dir))}
        info = {"id": f"annotator/{name}", "name": name, "annotator_version": __version__,
                "estimator_version": ESTIMATOR_VERSION, "description": variant.description,
                "components": components,
                "native_skeleton": skeletons.NATIVE.name,
                "skeletons": {n: {"joint_names": list(sk.joint_names), "edges": [list(e) for e in sk.edges]}
                              for n, sk in skeletons.SKELETONS.items()},
                "derived_joints": {n: [j for j, d in zip(sk.joint_names, sk.derived, strict=True) if d]
                                   for n, sk in skeletons.SKELETONS.items()},
                "licence": "Apache-2.0 (MoveNet, BlazePose GHUM 3D weights by Google)"}
        options = EstimatorOptions()
        info["estimator_options"] = options.to_dict()
        estimator = model.PoseEstimator(
            detectors.MoveNetMultiPose(tf.saved_model.load(str(det_dir))),
            crop_models.BlazePoseGHUM(tf.saved_model.load(str(crop_dir))), info, options)
        with _build_into(out, f".{name}-") as sm:
            tf.saved_model.save(estimator, str(sm), signatures=model.signatures(estimator))
            info["sha256"] = directory_sha256(sm)
            info["build_seconds"] = round(time.time() - started, 1)
            (sm / INFO_FILE).write_text(json.dumps(info, indent=2))
    return out


def _read_info(path: Path) -> dict:
    try:
        return json.loads((Path(path) / INFO_FILE).read_text())
    except FileNotFoundError:
        return {}


def path(name: str = DEFAULT, build_missing: bool = True, fetch: bool = False) -> Path:
    """Local folder of a named model, built from cached packages if missing or stale.

    Jobs call this with ``fetch=False``: converting cached tarballs is local work, but nothing is
    downloaded at run time; a missing tarball is an error naming the setup command.
    """
    out = model_dir(name)
    if _is_current(out):
        return out
    if build_missing:
        return build(name, fetch=fetch)
    raise ModelNotBuiltError(
        f"model {canonical(name)!r} is not built in {cache_dir()}: run `annotator models build {canonical(name)}`"
        " (setup does this for the default model)")


def info(model_path: Path) -> dict:
    """The model's ``annotator_model.json`` (empty for models built elsewhere)."""
    return _read_info(model_path)
