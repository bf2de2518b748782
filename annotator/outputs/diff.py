"""``annotator diff A B``: how two labelings of the same images differ, per image and overall.

Why: a better model or other settings on the same input give a second output; before training on
it a user needs to know what moved. Per image (ids in both): the change in people count, the mean
3D joint displacement of the people both found (mm, camera frame), and the shift of their mean
quality. People are matched by their 2D box centres (greedy, nearest first, within the larger
box's diagonal), so a person found by one labeling only counts in the people change, not the
displacement. Reads each output through ``layout.Output.open`` (committed parts, checksums
verified): ``OUT@v1 OUT@v2`` compares two versions of one output (``pipeline.versions``), ``OUT``
is its latest. ``section_html`` is the report's section of a diff (a table and a plot).
"""

from __future__ import annotations

import numpy as np

from annotator.outputs.html_parts import data_uri, escape, figure, png, table
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
        table = layout.Output.open(uri, storage_options).read_table(columns=COLUMNS)
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


def plot_png(result: dict) -> bytes:
    """Per image: mean joint displacement (mm), quality shift and people change, as histograms."""
    fig = figure(12.0, 3.0)
    images = result["images"]
    moves = [d["mean_displacement_mm"] for d in images if d["mean_displacement_mm"] is not None]
    shifts = [d["quality_shift"] for d in images if d["quality_shift"] is not None]
    changes = [d["people_change"] for d in images]
    for i, (values, label, colour) in enumerate(((moves, "mean joint displacement (mm)", "tab:blue"),
                                                 (shifts, "quality shift (B - A)", "tab:orange"))):
        ax = fig.add_subplot(1, 3, i + 1)
        ax.hist(values, bins=20, color=colour, edgecolor="white")
        ax.set_xlabel(label)
        ax.set_ylabel("images")
        ax.set_title(f"{label.split(' (')[0]} per image (n={len(values)})", fontsize=10)
    ax = fig.add_subplot(1, 3, 3)
    xs = sorted(set(changes))
    ax.bar([f"{x:+d}" for x in xs], [changes.count(x) for x in xs], color="tab:green")
    ax.set_xlabel("people B - A")
    ax.set_ylabel("images")
    ax.set_title("people count change per image", fontsize=10)
    return png(fig)


def section_html(result: dict, top: int = 20, title: str | None = None) -> str:
    """The report's diff section: the summary, a plot and the images that moved most."""
    s = result["summary"]

    def num(v, fmt="{:.1f}"):
        return "-" if v is None else fmt.format(v)
    out = [f"<h2>{escape(title or 'Changes between versions')}</h2>",
           f'<p class="note">A = <code>{escape(s["a"])}</code>, B = <code>{escape(s["b"])}</code>; people are '
           "matched by box centre; displacement in mm (camera frame) over the joints of matched people.</p>",
           table([("images in both", s["images_compared"]), ("only in A", s["only_in_a"]),
                  ("only in B", s["only_in_b"]), ("people A -> B", f"{s['people_a']} -> {s['people_b']}"),
                  ("images whose people count changed", s["images_people_changed"]),
                  ("mean displacement (mm)", num(s["mean_displacement_mm"])),
                  ("median displacement (mm)", num(s["median_displacement_mm"])),
                  ("mean quality shift", num(s["mean_quality_shift"], "{:+.3f}"))]),
           f'<div class="charts"><img alt="diff histograms" src="{data_uri(plot_png(result), "image/png")}"></div>']
    ranked = sorted(result["images"], key=lambda d: (-(d["mean_displacement_mm"] if d["mean_displacement_mm"]
                                                       is not None else -1.0), -abs(d["people_change"])))[:top]
    out.append(f"<p>The {len(ranked)} image(s) that moved most:</p>")
    out.append(table([(d["image_id"], d["people_a"], d["people_b"], d["matched"], num(d["mean_displacement_mm"]),
                       num(d["quality_shift"], "{:+.3f}")) for d in ranked],
                     ("image", "people A", "people B", "matched", "moved (mm)", "quality shift")))
    return "\n".join(out)
