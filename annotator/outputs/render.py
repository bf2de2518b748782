"""Pictures of labels: a 2D overlay per image and a 3D view per person, as PNG.

Why: before anyone spends GPU weeks training on pseudo-labels they should look at them. The
overlay shows what the file says about the image (boxes, 2D skeleton with the file's own joint
names and edges, detector score, quality); the 3D view shows what a 2D overlay cannot: depth, limb
proportions, and where the person stands relative to the camera (frustum) and, with known
extrinsics, the ground.

Everything is drawn from the Parquet row and its file metadata, with the image read from the row's
``source_uri`` and decoded by the labelling job's own decoder, so a misaligned overlay means the
labels (or the file) are wrong, not the renderer. Pillow draws the overlay; matplotlib (Agg, no
pyplot state) the 3D view.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from annotator.outputs import dataset
from annotator.pipeline import sources
from annotator.pipeline.layout import Output

log = logging.getLogger(__name__)

LEFT = (40, 160, 255)
RIGHT = (255, 80, 60)
CENTER = (60, 220, 90)
OTHER = (170, 170, 170)


@dataclass(frozen=True)
class RenderConfig:
    """How overlays and 3D views look.

    max_side: downscale the overlay so its longer side is at most this (None: full size); coordinates
        are scaled with it, so lines stay crisp.
    joint_names: write each joint's name beside it (skipped where it would overlap an earlier label,
        and for people whose box is under ``label_min_box_px`` tall in the output).
    low_confidence: joints with a confidence under this are drawn hollow.
    view3d: also write one 3D view per person.
    palette: write overlays as palette PNGs with this many colours (about 4x smaller; for docs).
    """

    max_side: int | None = None
    joint_names: bool = True
    label_min_box_px: int = 160
    low_confidence: float = 0.5
    view3d: bool = True
    palette: int | None = None
    dpi: int = 100
    figsize: tuple[float, float] = (10.0, 5.0)


@dataclass
class RenderResult:
    written: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (image_id, why)


# ---------------------------------------------------------------------------------------------
# Skeleton sides


def joint_sides(names: list[str]) -> list[str]:
    """'L', 'R' or 'C' per joint: from ``left``/``right`` in the name, or a one-letter ``l``/``r``
    prefix whose mirrored name also exists (MeTRAbs ``lsho``/``rsho``)."""
    lower = [n.lower() for n in names]
    present = set(lower)
    sides = []
    for n in lower:
        if "left" in n:
            sides.append("L")
        elif "right" in n:
            sides.append("R")
        elif n[:1] in ("l", "r") and ({"l": "r", "r": "l"}[n[0]] + n[1:]) in present:
            sides.append(n[0].upper())
        else:
            sides.append("C")
    return sides


def _side_color(side: str) -> tuple[int, int, int]:
    return {"L": LEFT, "R": RIGHT}.get(side, CENTER)


def edge_colors(skeleton: dict) -> list[tuple[int, int, int]]:
    sides = joint_sides(list(skeleton.get("joint_names", [])))
    out = []
    for a, b in skeleton.get("edges", []):
        out.append(_side_color(sides[a] if sides[a] == sides[b] else ("C" if "C" in (sides[a], sides[b])
                                                                      else sides[a])))
    return out


def value_color(value: float | None) -> tuple[int, int, int]:
    """Red (0) - yellow - green (1) for a score or quality; grey when unknown."""
    if value is None or not np.isfinite(value):
        return OTHER
    from matplotlib import colormaps

    r, g, b, _ = colormaps["RdYlGn"](float(np.clip(value, 0, 1)))
    return int(r * 255), int(g * 255), int(b * 255)


def person_label(k: int, person: dict) -> str:
    text = f"#{k} det {person['score']:.2f}"
    if person.get("pose_score") is not None:
        text += f" pose {person['pose_score']:.2f}"
    if person.get("quality") is not None:
        text += f" q {person['quality']:.2f}"
    return text


# ---------------------------------------------------------------------------------------------
# 2D overlay


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=max(8, size))


def overlay(image: np.ndarray, row: dict, skeleton: dict, config: RenderConfig | None = None,
            highlight: int | None = None) -> Image.Image:
    """The image with every person's box, 2D skeleton, joint names and scores drawn on it.

    ``highlight``: draw only this person in colour and the others in grey (for sampled grids).
    """
    config = config or RenderConfig()
    img = Image.fromarray(image).convert("RGB")
    scale = 1.0
    if config.max_side and max(img.size) > config.max_side:
        scale = config.max_side / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS)
    draw = ImageDraw.Draw(img)
    side = max(img.size)
    lw = max(2, round(side / 300))
    radius = max(2, round(lw * 1.4))
    font = _font(max(12, round(side / 70)))
    name_font = _font(max(10, round(side / 95)))
    names = list(skeleton.get("joint_names", []))
    sides = joint_sides(names)
    colors = edge_colors(skeleton)
    people = row.get("people") or []
    order = [k for k in range(len(people)) if k != highlight] + ([highlight] if highlight is not None else [])
    placed: list[tuple[float, float]] = []
    for k in order:
        p = people[k]
        dim = highlight is not None and k != highlight
        j2d = np.asarray(p["joints2d"], np.float64).reshape(-1, 2) * scale
        conf = p.get("joint_confidences")
        x, y, w, h = (np.asarray(p["box"], np.float64) * scale).tolist()
        q = p.get("quality")
        box_color = OTHER if dim else value_color(q if q is not None else p["score"])
        draw.rectangle([x, y, x + w, y + h], outline=box_color, width=lw)
        for (a, b), color in zip(skeleton.get("edges", []), colors, strict=False):
            if not dim:  # a dark outline keeps red/blue limbs visible on red/blue clothes
                draw.line([tuple(j2d[a]), tuple(j2d[b])], fill=(0, 0, 0), width=lw + 2)
            draw.line([tuple(j2d[a]), tuple(j2d[b])], fill=OTHER if dim else color, width=lw)
        for j, (u, v) in enumerate(j2d):
            color = OTHER if dim else _side_color(sides[j] if j < len(sides) else "C")
            hollow = conf is not None and conf[j] is not None and conf[j] < config.low_confidence
            draw.ellipse([u - radius, v - radius, u + radius, v + radius], outline=color,
                         fill=None if hollow else color, width=max(1, lw // 2))
        label = person_label(k, p)
        tb = draw.textbbox((0, 0), label, font=font, stroke_width=2)
        ty = y - (tb[3] - tb[1]) - 2 * lw if y - (tb[3] - tb[1]) - 2 * lw > 0 else y + lw
        draw.text((x + lw, ty), label, fill=(255, 255, 255), font=font, stroke_width=2, stroke_fill=(0, 0, 0))
        if config.joint_names and not dim and h >= config.label_min_box_px:
            min_gap = name_font.size * 1.1
            for j, (u, v) in enumerate(j2d):
                if j >= len(names) or any(abs(u - pu) < min_gap * 3 and abs(v - pv) < min_gap for pu, pv in placed):
                    continue
                placed.append((u, v))
                draw.text((u + radius + 1, v - name_font.size / 2), names[j], fill=(255, 255, 255), font=name_font,
                          stroke_width=1, stroke_fill=(0, 0, 0))
    return img


# ---------------------------------------------------------------------------------------------
# 3D view


def _basis(up: np.ndarray, right_hint: np.ndarray) -> np.ndarray:
    """Rows e1, e2, e3 of a right-handed display frame with e3 = up and e1 close to ``right_hint``."""
    e3 = up / np.linalg.norm(up)
    e1 = right_hint - np.dot(right_hint, e3) * e3
    if np.linalg.norm(e1) < 1e-6:
        e1 = np.cross(e3, [1.0, 0, 0]) if abs(e3[0]) < 0.9 else np.cross(e3, [0, 1.0, 0])
    e1 = e1 / np.linalg.norm(e1)
    return np.stack([e1, np.cross(e3, e1), e3])


def scene_geometry(row: dict, k: int, settings: dict | None = None) -> dict:
    """The person's joints, camera centre and frustum corners in the frame we draw in: the world
    frame (with the ground plane through its origin, perpendicular to ``world_up_vector``) when the
    row has extrinsics, else the camera frame (up = -y). All in mm, display basis applied."""
    p = row["people"][k]
    settings = settings or {}
    kmat = np.asarray(row["intrinsics"], np.float64).reshape(3, 3)
    ext = row.get("extrinsics")
    width, height = row["width"], row["height"]
    cam_joints = np.asarray(p["joints3d_cam"], np.float64).reshape(-1, 3)
    depth = float(np.max(cam_joints[:, 2])) * 1.1 if len(cam_joints) else 1000.0
    corners_px = np.array([[0, 0, 1], [width, 0, 1], [width, height, 1], [0, height, 1]], np.float64)
    corners_cam = (np.linalg.inv(kmat) @ corners_px.T).T * depth
    if ext is not None and p.get("joints3d_world") is not None:
        e = np.asarray(ext, np.float64).reshape(4, 4)
        rot, t = e[:3, :3], e[:3, 3]
        joints = np.asarray(p["joints3d_world"], np.float64).reshape(-1, 3)
        center = -rot.T @ t
        corners = (corners_cam - t) @ rot  # R^T (x - t)
        up = np.asarray(settings.get("world_up_vector", (0.0, -1.0, 0.0)), np.float64)
        right_hint = rot[0]
        frame = "world"
    else:
        joints, center, corners = cam_joints, np.zeros(3), corners_cam
        up, right_hint, frame = np.array([0.0, -1.0, 0.0]), np.array([1.0, 0, 0]), "camera"
    basis = _basis(up, right_hint)
    return {"frame": frame, "joints": joints @ basis.T, "camera": center @ basis.T, "frustum": corners @ basis.T,
            "ground": frame == "world"}


def _equal_limits(ax, points: np.ndarray, margin: float = 0.05) -> None:
    lo, hi = points.min(0), points.max(0)
    mid, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2 * (1 + margin), 1.0)
    ax.set_xlim(mid[0] - half, mid[0] + half)
    ax.set_ylim(mid[1] - half, mid[1] + half)
    ax.set_zlim(mid[2] - half, mid[2] + half)
    ax.set_box_aspect((1, 1, 1))


def _draw_skeleton3d(ax, joints: np.ndarray, skeleton: dict) -> None:
    for (a, b), color in zip(skeleton.get("edges", []), edge_colors(skeleton), strict=False):
        ax.plot(*joints[[a, b]].T, color=np.array(color) / 255, linewidth=2)
    ax.scatter(*joints.T, s=6, color="k", depthshade=False)


def view3d(row: dict, k: int, skeleton: dict, settings: dict | None = None,
           config: RenderConfig | None = None) -> bytes:
    """PNG of person ``k``: the scene (camera frustum, person, ground plane with extrinsics) and a
    close-up of the pose (root-relative, equal axes, in mm)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    config = config or RenderConfig()
    g = scene_geometry(row, k, settings)
    fig = Figure(figsize=config.figsize, dpi=config.dpi)
    FigureCanvasAgg(fig)
    scene = fig.add_subplot(1, 2, 1, projection="3d")
    cam, fr, joints = g["camera"], g["frustum"], g["joints"]
    for c in fr:
        scene.plot(*np.stack([cam, c]).T, color="0.4", linewidth=0.8)
    scene.plot(*np.vstack([fr, fr[:1]]).T, color="0.4", linewidth=0.8)
    scene.scatter(*cam, color="k", marker="^", s=30)
    scene.text(*cam, " camera", fontsize=8)
    _draw_skeleton3d(scene, joints, skeleton)
    pts = np.vstack([joints, cam[None], fr])
    if g["ground"]:
        lo, hi = pts.min(0), pts.max(0)
        xx, yy = np.meshgrid(np.linspace(lo[0], hi[0], 2), np.linspace(lo[1], hi[1], 2))
        scene.plot_surface(xx, yy, np.zeros_like(xx), color="tab:olive", alpha=0.25)
        pts = np.vstack([pts, [[lo[0], lo[1], 0.0]]])
    _equal_limits(scene, pts)
    scene.set_title(f"scene ({g['frame']} frame, mm)" + (", ground z=0" if g["ground"] else ""), fontsize=9)
    scene.view_init(elev=20, azim=-120)
    close = fig.add_subplot(1, 2, 2, projection="3d")
    rel = joints - joints.mean(0)
    _draw_skeleton3d(close, rel, skeleton)
    _equal_limits(close, rel)
    close.set_title("pose (centred, mm)", fontsize=9)
    close.view_init(elev=10, azim=-75)  # roughly from the camera
    for ax in (scene, close):
        ax.tick_params(labelsize=6)
        ax.set_xlabel("right", fontsize=7)
        ax.set_ylabel("forward", fontsize=7)
        ax.set_zlabel("up", fontsize=7)
    fig.suptitle(f"{row['image_id']}  {person_label(k, row['people'][k])}", fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Files


def png_bytes(img: Image.Image, palette: int | None = None) -> bytes:
    buf = io.BytesIO()
    if palette:
        img = img.convert("RGB").quantize(colors=palette, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def render(output_uri: str, out_dir: str, ids: list[str] | None = None, limit: int | None = None,
           config: RenderConfig | None = None, storage_options: dict | None = None) -> RenderResult:
    """Write ``<id>.overlay.png`` (+ ``<id>.person<k>.3d.png``) for the chosen rows into ``out_dir``.

    ``ids``: image ids to draw (error rows are reported as skipped); else the first ``limit`` ok rows
    (default 10). Images that can no longer be read are skipped with the reason, not fatal.
    """
    config = config or RenderConfig()
    output = Output.open(output_uri, storage_options)
    meta = output.metadata()
    skeleton, settings = meta.get("skeleton") or {}, meta.get("settings") or {}
    rows = dataset.find_rows(output, ids=ids, limit=None if ids else (10 if limit is None else limit))
    if ids and limit is not None:
        rows = rows[:limit]
    fs, root = sources.filesystem(str(out_dir), storage_options)
    fs.makedirs(root, exist_ok=True)
    result = RenderResult()
    for row in rows:
        if row["status"] != "ok":
            result.skipped.append((row["image_id"], f"error row: {row['error']}"))
            continue
        try:
            image = dataset.load_image(row["source_uri"], storage_options)
        except Exception as e:  # noqa: BLE001 - one unreadable image must not stop the others
            result.skipped.append((row["image_id"], f"cannot read {row['source_uri']}: {e}"))
            continue
        name = dataset.safe_name(row["image_id"])
        path = f"{root}/{name}.overlay.png"
        fs.pipe_file(path, png_bytes(overlay(image, row, skeleton, config), config.palette))
        result.written.append(path)
        if config.view3d:
            for k in range(len(row["people"] or [])):
                path = f"{root}/{name}.person{k}.3d.png"
                fs.pipe_file(path, view3d(row, k, skeleton, settings, config))
                result.written.append(path)
    return result
