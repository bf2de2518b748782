"""``annotator diff A B``: how two labelings of the same images differ, per image and overall.

Why: a better model or other settings on the same input give a second output; before training on
it a user needs to know what moved. Per image (ids in both): the change in people count, the mean
3D joint displacement of the people both found (mm, camera frame), and the shift of their mean
quality. People are matched by their 2D box centres (greedy, nearest first, within the larger
box's diagonal), so a person found by one labeling only counts in the people change, not the
displacement. Reads each output through ``layout.Output`` (committed parts, checksums verified).
"""

from __future__ import annotations

import numpy as np

from annotator.pipeline import layout

COLUMNS = ["image_id", "status", "people"]


def _people(row: dict) -> list[dict]:
    return [p for p in (row.get("people") or []) if p is not None] if row.get("status") == "ok" else []


def _centre(p: dict) -> np.ndarray:
    x, y, w, h = p["box"][:4]
    return np.array([x + w / 2, y + h / 2], np.float64)


def match(a: list[dict], b: list[dict]) -> list[tuple[int, int]]:
    """Pairs (index in a, index in b), nearest box centres first, each person once."""
    pairs = sorted((float(np.linalg.norm(_centre(pa_) - _centre(pb))), i, j)
                   for i, pa_ in enumerate(a) for j, pb in enumerate(b))
    used_a, used_b, out = set(), set(), []
    for dist, i, j in pairs:
        limit = max(np.hypot(*a[i]["box"][2:4]), np.hypot(*b[j]["box"][2:4]))
        if i in used_a or j in used_b or dist > limit:
            continue
        used_a.add(i)
        used_b.add(j)
        out.append((i, j))
    return out


def _displacement(pa_: dict, pb: dict) -> float:
    ja, jb = np.asarray(pa_["joints3d_cam"], np.float64), np.asarray(pb["joints3d_cam"], np.float64)
    if ja.shape != jb.shape:  # other skeletons: no joint-by-joint answer
        return float("nan")
    return float(np.nanmean(np.linalg.norm(ja - jb, axis=-1)))


def _mean_quality(people: list[dict]) -> float:
    q = [p["quality"] for p in people if p.get("quality") is not None]
    return float(np.mean(q)) if q else float("nan")


def image_diff(image_id: str, a: dict, b: dict) -> dict:
    pa_, pb = _people(a), _people(b)
    pairs = match(pa_, pb)
    moves = [_displacement(pa_[i], pb[j]) for i, j in pairs]
    return {"image_id": image_id, "people_a": len(pa_), "people_b": len(pb), "people_change": len(pb) - len(pa_),
            "matched": len(pairs), "mean_displacement_mm": float(np.nanmean(moves)) if moves and
            not np.all(np.isnan(moves)) else float("nan"),
            "quality_shift": _mean_quality([pb[j] for _, j in pairs]) - _mean_quality([pa_[i] for i, _ in pairs])
            if pairs else float("nan")}


def compare(a_uri: str, b_uri: str, storage_options: dict | None = None) -> dict:
    """``{"images": [per-image dicts, by image id], "summary": {...}}`` for two outputs."""
    rows = []
    for uri in (a_uri, b_uri):
        table = layout.Output(uri, storage_options).read_table(columns=COLUMNS)
        rows.append({r["image_id"]: r for r in table.to_pylist()})
    a, b = rows
    common = sorted(set(a) & set(b))
    images = [image_diff(i, a[i], b[i]) for i in common]
    moves = np.array([d["mean_displacement_mm"] for d in images], np.float64)
    shifts = np.array([d["quality_shift"] for d in images], np.float64)
    moved = moves[~np.isnan(moves)]
    summary = {"a": a_uri, "b": b_uri, "images_compared": len(common), "only_in_a": len(set(a) - set(b)),
               "only_in_b": len(set(b) - set(a)),
               "people_a": sum(d["people_a"] for d in images), "people_b": sum(d["people_b"] for d in images),
               "images_people_changed": sum(d["people_change"] != 0 for d in images),
               "mean_displacement_mm": float(moved.mean()) if moved.size else None,
               "median_displacement_mm": float(np.median(moved)) if moved.size else None,
               "mean_quality_shift": float(np.nanmean(shifts)) if np.any(~np.isnan(shifts)) else None}
    images = [{k: None if isinstance(v, float) and np.isnan(v) else v for k, v in d.items()} for d in images]
    return {"images": images, "summary": summary}  # None where there is no answer (JSON has no NaN)


def to_text(result: dict, top: int = 10) -> str:
    """What ``annotator diff`` prints: the summary, then the images that moved most."""
    s = result["summary"]

    def num(v, fmt="{:.1f}"):
        return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else fmt.format(v)
    lines = [f"A: {s['a']}", f"B: {s['b']}",
             f"images:   {s['images_compared']} in both ({s['only_in_a']} only in A, {s['only_in_b']} only in B)",
             f"people:   {s['people_a']} -> {s['people_b']} ({s['images_people_changed']} image(s) changed count)",
             f"joints:   mean displacement {num(s['mean_displacement_mm'])} mm, median "
             f"{num(s['median_displacement_mm'])} mm (people found by both)",
             f"quality:  mean shift {num(s['mean_quality_shift'], '{:+.3f}')}"]
    ranked = sorted(result["images"], key=lambda d: -(d["mean_displacement_mm"] if d["mean_displacement_mm"]
                                                        is not None else -1.0))[:top]
    if ranked:
        lines.append(f"{'image_id':40s} {'people':>9s} {'moved mm':>9s} {'quality':>8s}")
        for d in ranked:
            lines.append(f"{d['image_id'][:40]:40s} {d['people_a']:>3d} -> {d['people_b']:<3d} "
                         f"{num(d['mean_displacement_mm']):>9s} {num(d['quality_shift'], '{:+.3f}'):>8s}")
    return "\n".join(lines)
