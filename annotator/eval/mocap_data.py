"""The motion-capture dataset format of ``annotator eval mocap``: read, check, write.

Why a format of our own: Human3.6M, MPI-INF-3DHP, 3DPW and studio captures each ship cameras and
joints differently, and their licences keep them out of this repository. Users convert theirs once
into this layout (a few lines of numpy, ``docs/models.md``), and every check below turns a
conversion mistake (metres for millimetres, a transposed K, a joint-count mismatch) into an error
that names the row and the field instead of a silently wrong number.

Parquet: one row per person and image (``mocap.parquet``; images relative to the file's folder).

==============  ========================  =====================================================
column          type                      meaning
==============  ========================  =====================================================
image           string                    image path, relative to the dataset root (or absolute)
K               list<double> [9]          3x3 intrinsics, row-major, pixels
distortion      list<double> [0-14]       optional: OpenCV order (k1 k2 p1 p2 k3 ...); null: none
extrinsics      list<double> [16]         optional: 4x4 world -> camera, row-major, translation mm
joints3d        list<double> [J*3]        the joints, mm (x, y, z per joint; NaN: not captured)
joint_names     list<string> [J]          optional: instead of the file metadata's
person          int                       optional: which person of the image (default 0)
sequence        string                    optional: rows are also summarised per value; so are
action          string                    ``action``, ``subject`` and ``camera``
subject         string
camera          string
==============  ========================  =====================================================

File metadata ``annotator_mocap`` (JSON): ``joint_names`` (list) or ``joint_order`` (``h36m_17``,
``3dhp_17``, ``smpl_24``); ``frame``: ``camera`` (default) or ``world`` (then every row needs
``extrinsics``); ``units``: ``mm`` (the only one); optional ``world_up`` [3] (the world's up
direction, for the ground plane) and ``floor_height_mm``.

NPZ: the same names as arrays: ``images`` [N] str, ``K`` [N,3,3] (or one [3,3]), ``joints3d``
[N,J,3], optional ``distortion`` [N,D], ``extrinsics`` [N,4,4], ``person``, ``sequence``,
``action``, ``subject`` [N], and ``joint_names`` [J] or ``joint_order``, ``frame``, ``units``,
``world_up``, ``floor_height_mm`` as 0-d or 1-d arrays.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from annotator.eval import joint_names

META_KEY = b"annotator_mocap"
GROUP_COLUMNS = ("sequence", "action", "subject", "camera")
DISTORTION_LENGTHS = (0, 4, 5, 8, 12, 14)  # what OpenCV accepts
DEFAULT_FILES = ("mocap.parquet", "mocap.npz")


class MocapFormatError(ValueError):
    """The dataset file does not follow the format (the message says where and how)."""


@dataclass
class MocapSet:
    """A checked dataset: N people-in-images with their cameras and joints in camera coordinates."""

    root: Path
    images: list[str]  # [N] as in the file
    intrinsics: np.ndarray  # [N,3,3]
    distortion: list[np.ndarray]  # [N] each [D], D in DISTORTION_LENGTHS
    extrinsics: list[np.ndarray | None]  # [N] 4x4 world -> camera (mm) or None
    joints: np.ndarray  # [N,J,3] mm, camera frame (converted from the world frame when given so)
    joint_names: list[str]  # canonical (``joint_names.canonical``)
    source_joint_names: list[str]  # as the file gives them
    person: np.ndarray  # [N] int
    groups: dict[str, list[str]] = field(default_factory=dict)  # GROUP_COLUMNS present -> [N]
    frame: str = "camera"
    world_up: tuple[float, float, float] | None = None
    floor_height_mm: float | None = None

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, i: int) -> Path:
        p = Path(self.images[i])
        return p if p.is_absolute() else self.root / p


def find(path: str | Path) -> Path:
    """The dataset file: ``path`` itself, or ``mocap.parquet`` / ``mocap.npz`` in that folder."""
    path = Path(path)
    if path.is_dir():
        for name in DEFAULT_FILES:
            if (path / name).is_file():
                return path / name
        raise MocapFormatError(f"{path}: no {' or '.join(DEFAULT_FILES)} in this folder")
    if not path.is_file():
        raise MocapFormatError(f"{path}: no such file")
    return path


def load(path: str | Path, check_images: bool = True) -> MocapSet:
    """Read and check a dataset (Parquet or NPZ, by suffix); images are relative to its folder."""
    path = find(path)
    if path.suffix.lower() == ".npz":
        meta, columns = _read_npz(path)
    elif path.suffix.lower() in (".parquet", ".pq"):
        meta, columns = _read_parquet(path)
    else:
        raise MocapFormatError(f"{path}: expected a .parquet or .npz file")
    data = _build(path, meta, columns)
    if check_images:
        missing = [str(data.image_path(i)) for i in range(len(data)) if not data.image_path(i).is_file()]
        if missing:
            raise MocapFormatError(f"{path}: {len(missing)} image(s) not found, e.g. {', '.join(missing[:3])}")
    return data


# ------------------------------------------------------------------------------ readers
def _read_parquet(path: Path) -> tuple[dict, dict]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(META_KEY)
    try:
        meta = json.loads(raw) if raw else {}
    except json.JSONDecodeError as e:
        raise MocapFormatError(f"{path}: file metadata {META_KEY.decode()!r} is not JSON: {e}") from None
    return meta, {name: table.column(name).to_pylist() for name in table.column_names}


def _read_npz(path: Path) -> tuple[dict, dict]:
    try:
        arrays = dict(np.load(path, allow_pickle=False))
    except ValueError as e:  # object arrays need pickle, which a data file must not
        raise MocapFormatError(f"{path}: {e} (store strings as fixed-width unicode, not objects)") from None
    meta = {}
    for key in ("joint_order", "frame", "units", "floor_height_mm"):
        if key in arrays:
            meta[key] = arrays.pop(key).item()
    for key in ("joint_names", "world_up"):
        if key in arrays:
            meta[key] = arrays.pop(key).tolist()
    columns: dict = {}
    if "images" in arrays:
        columns["image"] = [str(x) for x in arrays.pop("images")]
    n = len(columns.get("image", []))
    for key, value in arrays.items():
        if key == "K" and value.shape == (3, 3):
            value = np.broadcast_to(value, (n, 3, 3))
        columns[key] = list(value)
    return meta, columns


# ------------------------------------------------------------------------------ checks
def _vectors(path: Path, columns: dict, name: str, n: int, lengths: tuple[int, ...] | None,
             optional: bool = False) -> list[np.ndarray | None]:
    """Column ``name`` as one float vector per row (None where null and ``optional``), each of a
    length in ``lengths``, finite."""
    values = columns.get(name)
    if values is None:
        if optional:
            return [None] * n
        raise MocapFormatError(f"{path}: missing column {name!r}")
    out: list[np.ndarray | None] = []
    for i, v in enumerate(values):
        if v is None:
            if not optional:
                raise MocapFormatError(f"{path}: row {i}: {name} is null")
            out.append(None)
            continue
        try:
            a = np.asarray(v, np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise MocapFormatError(f"{path}: row {i}: {name} is not a list of numbers") from None
        if lengths is not None and a.size not in lengths:
            raise MocapFormatError(f"{path}: row {i}: {name} has {a.size} values, expected "
                                   f"{' or '.join(map(str, lengths))}")
        out.append(a)
    return out


def _check_k(path: Path, i: int, k: np.ndarray) -> None:
    if not np.isfinite(k).all() or k[0, 0] <= 0 or k[1, 1] <= 0 or not np.allclose(k[2], [0, 0, 1]) \
            or k[1, 0] != 0:
        raise MocapFormatError(f"{path}: row {i}: K is not an intrinsic matrix [[fx,s,cx],[0,fy,cy],[0,0,1]] "
                               f"with fx, fy > 0 (row-major): {k.tolist()}")


def _check_extrinsics(path: Path, i: int, e: np.ndarray) -> None:
    r = e[:3, :3]
    if not np.isfinite(e).all() or not np.allclose(e[3], [0, 0, 0, 1]) \
            or not np.allclose(r @ r.T, np.eye(3), atol=1e-3) or np.linalg.det(r) < 0:
        raise MocapFormatError(f"{path}: row {i}: extrinsics are not a 4x4 rigid world -> camera matrix "
                               "[[R, t], [0, 0, 0, 1]] (R a rotation, row-major)")


def _names(path: Path, meta: dict, columns: dict) -> list[str]:
    per_row = columns.get("joint_names")
    if per_row is not None:
        first = per_row[0] if per_row else None
        if any(r != first for r in per_row):
            raise MocapFormatError(f"{path}: joint_names differ between rows; one joint set per file")
        if first is not None:
            return [str(n) for n in first]
    if meta.get("joint_names"):
        return [str(n) for n in meta["joint_names"]]
    if meta.get("joint_order"):
        try:
            return list(joint_names.order(str(meta["joint_order"])))
        except ValueError as e:
            raise MocapFormatError(f"{path}: {e}") from None
    raise MocapFormatError(f"{path}: no joint names: give 'joint_names' or 'joint_order' in the "
                           f"{META_KEY.decode()!r} metadata, or a joint_names column")


def _build(path: Path, meta: dict, columns: dict) -> MocapSet:
    if "image" not in columns:
        raise MocapFormatError(f"{path}: missing column 'image'")
    n = len(columns["image"])
    if n == 0:
        raise MocapFormatError(f"{path}: no rows")
    units = str(meta.get("units", "mm")).lower()
    if units != "mm":
        raise MocapFormatError(f"{path}: units {units!r}: joints and extrinsics must be in millimetres ('mm')")
    frame = str(meta.get("frame", "camera")).lower()
    if frame not in ("camera", "world"):
        raise MocapFormatError(f"{path}: frame {frame!r}: expected 'camera' or 'world'")
    source_names = _names(path, meta, columns)
    try:
        names = joint_names.canonical(source_names, str(meta.get("joint_order", "")))
    except ValueError as e:
        raise MocapFormatError(f"{path}: {e}") from None
    j = len(names)
    ks = _vectors(path, columns, "K", n, (9,))
    dist = _vectors(path, columns, "distortion", n, DISTORTION_LENGTHS, optional=True)
    ext = _vectors(path, columns, "extrinsics", n, (16,), optional=True)
    joints = _vectors(path, columns, "joints3d", n, None)
    for i, a in enumerate(joints):
        if a.size != 3 * j:
            raise MocapFormatError(f"{path}: row {i}: joints3d has {a.size} values, expected {3 * j} "
                                   f"({j} joint names x 3)")
    intrinsics = np.stack(ks).reshape(n, 3, 3)
    extrinsics: list[np.ndarray | None] = [None if e is None else e.reshape(4, 4) for e in ext]
    for i in range(n):
        _check_k(path, i, intrinsics[i])
        if extrinsics[i] is not None:
            _check_extrinsics(path, i, extrinsics[i])
        if dist[i] is not None and not np.isfinite(dist[i]).all():
            raise MocapFormatError(f"{path}: row {i}: distortion is not finite")
    first: dict[str, int] = {}
    for i, name in enumerate(columns["image"]):  # one image is labelled once, with one camera
        f = first.setdefault(str(name), i)
        if f != i and not (np.array_equal(intrinsics[f], intrinsics[i]) and _same(dist[f], dist[i])
                           and _same(ext[f], ext[i])):
            raise MocapFormatError(f"{path}: rows {f} and {i} show the same image {name!r} with different cameras")
    xyz = np.stack(joints).reshape(n, j, 3)
    if frame == "world":
        lacking = [i for i, e in enumerate(extrinsics) if e is None]
        if lacking:
            raise MocapFormatError(f"{path}: frame 'world' but rows {lacking[:5]} have no extrinsics")
        xyz = np.stack([xyz[i] @ extrinsics[i][:3, :3].T + extrinsics[i][:3, 3] for i in range(n)])
    _check_millimetres(path, xyz, names)
    groups = {g: ["" if v is None else str(v) for v in columns[g]] for g in GROUP_COLUMNS if g in columns}
    person = np.asarray([0 if v is None else int(v) for v in columns["person"]] if "person" in columns
                        else np.zeros(n), np.int64)
    up = meta.get("world_up")
    return MocapSet(path.parent, [str(x) for x in columns["image"]], intrinsics,
                    [np.zeros(0) if d is None else d for d in dist], extrinsics, xyz, names, source_names,
                    person, groups, frame, None if up is None else tuple(float(x) for x in up),
                    None if meta.get("floor_height_mm") is None else float(meta["floor_height_mm"]))


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))


def _check_millimetres(path: Path, xyz: np.ndarray, names: list[str]) -> None:
    """Joints in metres (a common slip) make bodies 1000x too small: refuse them, and people
    behind the camera (a world frame given as camera, or inverted extrinsics)."""
    idx = {n: i for i, n in enumerate(names)}
    pairs = [(idx[a], idx[b]) for a, b in (("left_hip", "left_knee"), ("right_hip", "right_knee"),
                                             ("left_shoulder", "left_elbow"), ("left_hip", "right_hip"))
             if a in idx and b in idx]
    if pairs:
        lengths = np.concatenate([np.linalg.norm(xyz[:, a] - xyz[:, b], axis=-1) for a, b in pairs])
        lengths = lengths[np.isfinite(lengths)]
        if len(lengths) and np.median(lengths) < 20:
            raise MocapFormatError(f"{path}: the median bone is {np.median(lengths):.3g} long: the joints look "
                                   "like metres, expected millimetres")
    z = xyz[..., 2]
    depth = np.array([np.median(row[np.isfinite(row)]) if np.isfinite(row).any() else np.nan for row in z])
    behind = np.flatnonzero(depth <= 0)
    if len(behind):
        raise MocapFormatError(f"{path}: rows {behind[:5].tolist()}: the person is behind the camera (z <= 0 "
                               "in camera coordinates): check 'frame' and the extrinsics' direction")


# ------------------------------------------------------------------------------ writer
def write(path: str | Path, images: list[str], intrinsics: np.ndarray, joints3d: np.ndarray,
          names: list[str] | None = None, order: str | None = None, frame: str = "camera",
          distortion: np.ndarray | None = None, extrinsics: np.ndarray | None = None,
          world_up: tuple[float, float, float] | None = None, floor_height_mm: float | None = None,
          **columns) -> Path:
    """Write a dataset in this format (``.parquet`` or ``.npz`` by suffix): ``intrinsics`` [N,3,3],
    ``joints3d`` [N,J,3] mm, ``names`` [J] or ``order``; ``columns``: ``person`` and the
    ``GROUP_COLUMNS`` [N]. Returns the path."""
    path = Path(path)
    n = len(images)
    meta: dict = {"frame": frame, "units": "mm"}
    if names is not None:
        meta["joint_names"] = list(names)
    if order is not None:
        meta["joint_order"] = order
    if world_up is not None:
        meta["world_up"] = [float(x) for x in world_up]
    if floor_height_mm is not None:
        meta["floor_height_mm"] = float(floor_height_mm)
    arrays = {"K": np.asarray(intrinsics, np.float64).reshape(n, 3, 3),
              "joints3d": np.asarray(joints3d, np.float64).reshape(n, -1, 3)}
    if distortion is not None:
        arrays["distortion"] = np.asarray(distortion, np.float64).reshape(n, -1)
    if extrinsics is not None:
        arrays["extrinsics"] = np.asarray(extrinsics, np.float64).reshape(n, 4, 4)
    if path.suffix.lower() == ".npz":
        np.savez(path, images=np.asarray(images, str), **arrays,
                 **{k: np.asarray(v) for k, v in columns.items()},
                 **{k: np.asarray(v) for k, v in meta.items()})
        return path
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = {"image": list(images), **{k: [a.reshape(-1).tolist() for a in v] for k, v in arrays.items()},
            **{k: list(np.asarray(v).tolist()) for k, v in columns.items()}}
    table = pa.table(data).replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    pq.write_table(table, path)
    return path
