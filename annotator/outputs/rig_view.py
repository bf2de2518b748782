"""The report's section on a multi-camera rig (schema 1.5 ``view``): one fused person of one
instant drawn in two of the views that saw it, its reprojected skeleton over each image, with
how many views each joint used and its reprojection error. Empty for outputs of no rig."""

from __future__ import annotations

import numpy as np

from annotator.outputs import dataset, render
from annotator.outputs.html_parts import image_cell, table
from annotator.pipeline.layout import Output
from annotator.pipeline.rig import WORLD_VIEW


def pick(output: Output) -> tuple[dict, list[dict]] | None:
    """The first world person fused from the most views, and the view rows of its frame."""
    for record in output.records():
        f = output.open_part(record)
        if "view" not in f.schema_arrow.names:
            return None
        t = f.read()
        rows = t.to_pylist()
        best = None
        for r in rows:
            if r["view"] != WORLD_VIEW:
                continue
            for p in r["people"] or []:
                if best is None or len(p["fused_views"] or []) > len(best[1]["fused_views"] or []):
                    best = (r, p)
        if best is None:
            continue
        world, person = best
        frame = world["image_id"].rpartition("/")[2]
        views = [r for r in rows if r["view"] in (person["fused_views"] or []) and r["image_id"].endswith("/" + frame)]
        return person, views
    return None


def section_html(output: Output, skeleton: dict, storage_options: dict | None = None,
                 n_views: int = 2, side: int = 480) -> str:
    """The "Multi-camera rig" section (empty string for outputs of no rig)."""
    found = pick(output)
    if found is None:
        return ""
    person, views = found
    out = ["<h2>Multi-camera rig</h2>"]
    used = np.asarray(person["views_used"] or [], float)
    reproj = np.asarray(person["reprojection_px"] or [], float)
    out.append(table([("track", person["track_id"]), ("views fused", ", ".join(person["fused_views"] or [])),
                      ("joints seen by >= 2 views", f"{int((used >= 2).sum())} of {len(used)}"),
                      ("median reprojection error (px)",
                       f"{np.nanmedian(reproj):.1f}" if np.isfinite(reproj).any() else "-"),
                      ("median joint sigma (mm)", f"{np.median(person['joint_sigma_mm']):.0f}")]))
    out.append("<p>One fused person of one instant, reprojected into two of the views it was fused from "
               "(the fused person in colour, others grey):</p><div class=\"grid\">")
    config = render.RenderConfig(max_side=side, joint_names=False)
    for row in views[:n_views]:
        k = next((i for i, p in enumerate(row["people"]) if p.get("track_id") == person["track_id"]
                  and p.get("fused_views")), None)
        out.append(image_cell(lambda row=row, k=k: render.overlay(
            dataset.load_image(row["source_uri"], storage_options), row, skeleton, config, highlight=k),
            f"{row['view']}: {row['image_id']}"))
    out.append("</div>")
    return "\n".join(out)
