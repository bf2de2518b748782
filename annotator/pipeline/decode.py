"""Bytes -> RGB uint8 image + camera. Never raises for bad input: returns an error reason instead.

Why so defensive: at 10^8 images, every failure mode occurs (HTML saved as .jpg, truncated
uploads, 16-bit TIFFs, CMYK JPEGs, decompression bombs). Each becomes an error row with a short
reason code, and the job goes on. EXIF orientation is applied, so labels match what viewers show.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from annotator.labels.camera_codec import Camera

DEFAULT_FOV_DEGREES = 55.0
DEFAULT_MAX_PIXELS = 100_000_000  # ~100 MP: larger is more likely a bomb than a photo

# Error reason codes (the part of ``error`` before the colon).
EMPTY = "empty_file"
NOT_IMAGE = "not_an_image"
TRUNCATED = "truncated"
TOO_LARGE = "too_many_pixels"
BAD_MODE = "unsupported_image"
READ_ERROR = "read_error"


@dataclass
class Decoded:
    image: np.ndarray | None
    width: int | None
    height: int | None
    camera: Camera | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def default_intrinsics(width: int, height: int, fov_degrees: float = DEFAULT_FOV_DEGREES) -> np.ndarray:
    """Same convention as ``estimator.camera.default_intrinsics`` (numpy, for the decode stage)."""
    f = max(width, height) / (2.0 * math.tan(math.radians(fov_degrees) / 2.0))
    return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]], np.float32)


def _exif_focal_px(img: Image.Image, width: int, height: int) -> float | None:
    """Focal length in pixels from EXIF, if the camera recorded enough to compute it.

    Prefers the 35 mm-equivalent focal length (defined on the 43.27 mm full-frame diagonal);
    falls back to FocalLength with FocalPlane{X,Y}Resolution (sensor pixels per unit).
    """
    try:
        exif = img.getexif().get_ifd(ExifTags.IFD.Exif)
    except Exception:
        return None
    if not exif:
        return None
    diag = math.hypot(width, height)
    f35 = exif.get(ExifTags.Base.FocalLengthIn35mmFilm)
    try:
        if f35 and float(f35) > 0:
            return float(f35) * diag / math.hypot(36.0, 24.0)
        f_mm = exif.get(ExifTags.Base.FocalLength)
        xres = exif.get(ExifTags.Base.FocalPlaneXResolution)
        unit = exif.get(ExifTags.Base.FocalPlaneResolutionUnit, 2)
        if f_mm and xres and float(f_mm) > 0 and float(xres) > 0:
            mm_per_unit = {2: 25.4, 3: 10.0, 4: 1.0}.get(int(unit))
            if mm_per_unit:
                # xres is given for the sensor's native (unrotated, full-size) readout
                native_w = exif.get(ExifTags.Base.ExifImageWidth) or max(width, height)
                scale = max(width, height) / float(native_w)
                return float(f_mm) * float(xres) / mm_per_unit * scale
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size else 1.0
        arr = (arr / (hi if hi > 0 else 1.0) * 255.0).round().astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64))
        lo, hi = arr.min(), arr.max()
        arr = ((arr - lo) / ((hi - lo) or 1.0) * 255.0).round().astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def from_array(image: np.ndarray, camera: Camera | None = None,
               default_fov_degrees: float = DEFAULT_FOV_DEGREES) -> Decoded:
    """An already-decoded RGB frame (e.g. from a video) with its camera (given or default FOV)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
        return Decoded(None, None, None, None, f"{BAD_MODE}: frame shape {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    if camera is None:
        camera = Camera(default_intrinsics(width, height, default_fov_degrees), "default_fov")
    return Decoded(image, width, height, camera)


def decode(data: bytes | None, camera: Camera | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
           default_fov_degrees: float = DEFAULT_FOV_DEGREES) -> Decoded:
    """Decode ``data``; ``camera`` (from a sidecar or manifest) wins over EXIF and the default."""
    if data is None or len(data) == 0:
        return Decoded(None, None, None, None, f"{EMPTY}: 0 bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w0, h0 = img.size
            if w0 * h0 > max_pixels:
                return Decoded(None, None, None, None,
                               f"{TOO_LARGE}: {w0}x{h0} = {w0 * h0} pixels > limit {max_pixels}")
            img.load()
            focal = _exif_focal_px(img, *img.size)
            ImageOps.exif_transpose(img, in_place=True)  # else a copy of every upright image
            rgb = _to_rgb(img)
    except Image.DecompressionBombError as e:
        return Decoded(None, None, None, None, f"{TOO_LARGE}: {e}")
    except UnidentifiedImageError:
        return Decoded(None, None, None, None, f"{NOT_IMAGE}: not a recognised image format")
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e) or type(e).__name__
        code = TRUNCATED if "truncat" in msg.lower() or isinstance(e, EOFError) else NOT_IMAGE
        return Decoded(None, None, None, None, f"{code}: {msg}")
    except Exception as e:  # noqa: BLE001 - any decoder bug is one bad row, never a dead job
        return Decoded(None, None, None, None, f"{BAD_MODE}: {type(e).__name__}: {e}")
    image = np.asarray(rgb, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        return Decoded(None, None, None, None, f"{BAD_MODE}: decoded shape {image.shape}")
    height, width = image.shape[:2]
    if camera is None:
        if focal:
            k = np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]], np.float32)
            camera = Camera(k, "exif")
        else:
            camera = Camera(default_intrinsics(width, height, default_fov_degrees), "default_fov")
    return Decoded(image, width, height, camera)
