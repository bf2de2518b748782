"""Multi-camera calibration files -> OpenCV-convention cameras (world -> camera, millimetres).

Formats:

- Qualisys ``.qca.txt`` (what Pose2Sim's demos ship), converted as Pose2Sim does it
  (``calib_qca_fun``; reference models.md section 9.5, verified here by reprojection):
  K = [[fU/64, 0, cU/64 - left], [0, fV/64, cV/64 - top], [0, 0, 1]], dist = [k1, k2, p1, p2] / 64,
  R = diag(1, -1, -1) M and t = diag(1, -1, -1) (-M pos), with M the row-major r11..r33 and pos
  the camera position in mm.
- OpenCV ``FileStorage`` YAML (``%YAML:1.0`` with ``!!opencv-matrix``), plain YAML, JSON, or
  Pose2Sim's TOML: either one camera per file or a mapping ``{name: camera}``. Per camera, any of
  ``K``/``camera_matrix``/``matrix``/``intrinsic_matrix``; ``dist``/``D``/``dist_coeffs``/
  ``distortion_coefficients``/``distortions``; ``R``/``rotation_matrix`` (3x3) or
  ``rvec``/``rotation`` (Rodrigues); ``t``/``T``/``tvec``/``translation``; optional ``size``
  ([width, height]) and ``units`` (``m``, the OpenCV/Pose2Sim default, or ``mm``).
"""

from __future__ import annotations

import json
import re
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from annotator.pipeline import rig_source, sources


@dataclass(frozen=True)
class Camera:
    name: str
    intrinsics: np.ndarray  # [3,3]
    distortion: np.ndarray  # [D], OpenCV order
    rotation: np.ndarray  # [3,3], world -> camera
    translation: np.ndarray  # [3], mm
    size: tuple[int, int] | None = None  # (width, height)

    @property
    def extrinsics(self) -> np.ndarray:
        """4x4 world -> camera with translation in mm (the MeTRAbs ``extrinsic_matrix``)."""
        e = np.eye(4, dtype=np.float32)
        e[:3, :3] = self.rotation
        e[:3, 3] = self.translation
        return e

    @property
    def position(self) -> np.ndarray:
        return -self.rotation.T @ self.translation

    def projection(self) -> np.ndarray:
        """3x4 [R | t] (normalised-image projection, for triangulating undistorted rays)."""
        return np.concatenate([self.rotation, self.translation[:, None]], 1)


def rodrigues(rvec) -> np.ndarray:
    """Axis-angle 3-vector -> rotation matrix (OpenCV ``Rodrigues``)."""
    r = np.asarray(rvec, np.float64).reshape(3)
    theta = np.linalg.norm(r)
    if theta < 1e-12:
        return np.eye(3)
    k = r / theta
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * kx + (1 - np.cos(theta)) * kx @ kx


def read_qca(path: str | Path, storage_options: dict | None = None) -> list[Camera]:
    """Qualisys ``.qca.txt`` (a path or URI) -> cameras sorted by name (cam01, cam02, ...)."""
    return parse_qca(sources.read_bytes(str(path), storage_options))


def parse_qca(data: bytes | str) -> list[Camera]:
    """The cameras of a Qualisys ``.qca.txt``'s text, sorted by name."""
    root = ET.fromstring(data)
    cams = []
    for tag in root.findall("cameras/camera"):
        fov = tag.find("fov_video")
        left, top = float(fov.get("left")), float(fov.get("top"))
        width = int(float(fov.get("right")) - left + 1)
        height = int(float(fov.get("bottom")) - top + 1)
        i = tag.find("intrinsic")
        k = np.array([[float(i.get("focalLengthU")) / 64, 0, float(i.get("centerPointU")) / 64 - left],
                      [0, float(i.get("focalLengthV")) / 64, float(i.get("centerPointV")) / 64 - top],
                      [0, 0, 1]], np.float32)
        dist = np.array([float(i.get(n)) / 64 for n in (
            "radialDistortion1", "radialDistortion2", "tangentalDistortion1", "tangentalDistortion2")], np.float32)
        t = tag.find("transform")
        m = np.array([[float(t.get(f"r{a}{b}")) for b in (1, 2, 3)] for a in (1, 2, 3)])
        pos = np.array([float(t.get(c)) for c in "xyz"])
        flip = np.diag([1.0, -1.0, -1.0])
        cams.append(Camera(tag.get("serial"), k, dist, (flip @ m).astype(np.float32),
                           (flip @ (-m @ pos)).astype(np.float32), (width, height)))
    return sorted(cams, key=lambda c: _natural_key(c.name))


def _natural_key(s: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s)]


_KEYS = {
    "K": ("K", "camera_matrix", "matrix", "intrinsic_matrix", "intrinsics", "cameraMatrix"),
    "dist": ("dist", "D", "dist_coeffs", "distortion_coefficients", "distortions", "distCoeffs", "distortion"),
    "R": ("R", "rotation_matrix"),
    "rvec": ("rvec", "rotation", "r"),
    "t": ("t", "T", "tvec", "translation"),
    "size": ("size", "image_size", "resolution"),
}


def _get(d: dict, what: str):
    for key in _KEYS[what]:
        if key in d:
            return d[key]
    return None


def camera_from_dict(name: str, d: dict) -> Camera:
    k = _get(d, "K")
    t = _get(d, "t")
    if k is None or t is None:
        raise ValueError(f"camera {name!r}: needs an intrinsic matrix and a translation (keys: {sorted(d)})")
    r = _get(d, "R")
    rot = np.asarray(r, np.float64).reshape(3, 3) if r is not None and np.size(r) == 9 else None
    if rot is None:
        rvec = _get(d, "rvec")
        if rvec is None:
            raise ValueError(f"camera {name!r}: needs R (3x3) or rvec (Rodrigues)")
        rot = np.asarray(rvec, np.float64).reshape(3, 3) if np.size(rvec) == 9 else rodrigues(rvec)
    units = str(d.get("units", d.get("unit", "m"))).lower()
    scale = {"m": 1000.0, "meter": 1000.0, "meters": 1000.0, "mm": 1.0, "millimeter": 1.0, "cm": 10.0}[units]
    dist = _get(d, "dist")
    size = _get(d, "size")
    if size is None and "image_width" in d:
        size = (d["image_width"], d["image_height"])
    return Camera(str(d.get("name", name)), np.asarray(k, np.float32).reshape(3, 3),
                  np.asarray(dist if dist is not None else [], np.float32).reshape(-1),
                  rot.astype(np.float32), (np.asarray(t, np.float64).reshape(3) * scale).astype(np.float32),
                  tuple(int(v) for v in np.asarray(size).reshape(-1)[:2]) if size is not None else None)


def _opencv_yaml(text: str):
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def matrix(loader, node):
        m = loader.construct_mapping(node, deep=True)
        return np.asarray(m["data"], np.float64).reshape(int(m["rows"]), int(m["cols"]))

    Loader.add_constructor("tag:yaml.org,2002:opencv-matrix", matrix)
    text = re.sub(r"^%YAML[: ]1\.0\s*\n", "", text)
    return yaml.load(text, Loader=Loader)


def _cameras_from_doc(doc: dict, default_name: str) -> list[Camera]:
    if _get(doc, "K") is not None:
        return [camera_from_dict(default_name, doc)]
    cams = []
    for name, value in doc.items():
        if isinstance(value, dict) and _get(value, "K") is not None:
            cams.append(camera_from_dict(name, value))
    if not cams:
        raise ValueError(f"{default_name}: no camera found")
    return cams


def read(path: str | Path, storage_options: dict | None = None) -> list[Camera]:
    """The cameras of one calibration file (a path or any fsspec URI)."""
    return parse(rig_source.shown(path), sources.read_bytes(str(path), storage_options))


def parse(path: str, data: bytes) -> list[Camera]:
    """The cameras of a calibration file's content; ``path`` (its name) says the format."""
    name = rig_source.name(path).lower()
    if name.endswith(".qca.txt"):
        return parse_qca(data)
    text = data.decode()
    if name.endswith((".yaml", ".yml")):
        doc = _opencv_yaml(text)
    elif name.endswith(".json"):
        doc = json.loads(text)
    elif name.endswith(".toml"):
        doc = tomllib.loads(text)
        doc.pop("metadata", None)
    else:
        raise ValueError(f"{path}: unknown calibration format (.qca.txt, .yaml, .yml, .json, .toml)")
    stem = rig_source.name(path).split(".")[0]
    return _cameras_from_doc(doc, stem)


def _files(calibration_dir: str | Path, storage_options: dict | None) -> list[str]:
    return [u for u, is_dir in rig_source.children(calibration_dir, storage_options) if not is_dir]


def world_up(calibration_dir: str | Path, storage_options: dict | None = None) -> tuple[float, float, float] | None:
    """The world's up direction where the calibration format fixes it: Qualisys labs are Z-up
    (the L-frame lies on the floor). None when the format leaves it open (OpenCV, Pose2Sim TOML)."""
    if any(rig_source.name(u).lower().endswith(".qca.txt") for u in _files(calibration_dir, storage_options)):
        return (0.0, 0.0, 1.0)
    return None


def load(calibration_dir: str | Path, storage_options: dict | None = None) -> list[Camera]:
    """All cameras of a scene's ``calibration/`` folder (a path or any fsspec URI; one multi-camera
    file or one file per camera), sorted by name."""
    folder = rig_source.shown(calibration_dir)
    files = sorted(u for u in _files(calibration_dir, storage_options)
                   if rig_source.name(u).lower().endswith((".qca.txt", ".yaml", ".yml", ".json", ".toml")))
    if not files:
        raise FileNotFoundError(f"{folder}: no calibration file (.qca.txt, .yaml, .yml, .json, .toml)")
    cams = [c for f in files for c in read(f, storage_options)]
    names = [c.name for c in cams]
    if len(set(names)) != len(names):
        raise ValueError(f"{folder}: duplicate camera names {names}")
    return sorted(cams, key=lambda c: _natural_key(c.name))
