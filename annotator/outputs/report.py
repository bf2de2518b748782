"""``annotator report OUTPUT``: one static HTML page about a job's output.

Why one self-contained file: it gets mailed, attached to tickets and opened from buckets, where a
server, a second file or a script from the network would be missing. So the page has no JavaScript
at all, inline CSS, and every image (charts and sample overlays) is a ``data:`` URI.

Contents: counts, error reasons, people per image, the quality histogram (detector score histogram
for outputs without ``people[].quality``), what a ``--min-quality`` threshold would keep,
throughput from the run summary, model and settings from the file metadata, person tracks of
videos (``tracks.py``: lengths, a strip of one track's frames), and a grid of sampled overlays:
the best, median and worst people by quality (or score). For a version with a parent
(``pipeline.versions``), or two outputs given (``--diff``), what changed between them
(``diff.section_html``: per image people count, joint displacement, quality shift; a table and a plot).

Statistics are computed from the committed parts, one part at a time, reading only the small
columns; only the sampled rows are read in full.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from annotator.outputs import dataset, diff, render, rig_view, tracks
from annotator.outputs.html_parts import data_uri, escape, figure, image_cell, png, table
from annotator.pipeline import errors, layout, sources, versions
from annotator.pipeline.layout import Output

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportConfig:
    """samples_per_group: overlays in each of the best / median / worst rows of the grid.
    thumb_side: longer side (px) of each overlay thumbnail. thresholds: quality (or score) cut-offs
    for the "what a filter keeps" table."""

    samples_per_group: int = 3
    thumb_side: int = 480
    thresholds: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    title: str | None = None
    storage_options: dict = field(default_factory=dict)
    # (A, B) to compare (``OUT@vN`` or outputs); None: the reported version and its parent, if it has one;
    # () for no comparison
    diff: tuple[str, ...] | None = None


@dataclass
class Stats:
    """What one pass over the small columns gives."""

    rows: int = 0
    rows_ok: int = 0
    people: int = 0
    parts: int = 0
    errors: Counter = field(default_factory=Counter)
    error_examples: dict[str, list[str]] = field(default_factory=dict)
    people_per_image: Counter = field(default_factory=Counter)
    has_quality: bool = False
    # one entry per person: value ranked by (quality, else detector score), and where it lives
    values: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    where: list[tuple[int, int, int]] = field(default_factory=list)  # (part, row, person)

    @property
    def key(self) -> str:
        return "quality" if self.has_quality else "detector score"


def collect(output: Output) -> Stats:
    st = Stats()
    parts = output.records()
    st.parts = len(parts)
    for p, record in enumerate(parts):
        f = output.open_part(record)
        quality_here = dataset.has_quality(f.schema_arrow)
        st.has_quality = st.has_quality or quality_here
        cols = ["image_id", "status", "error", "num_people", "people.list.element.score"]
        if quality_here:
            cols.append("people.list.element.quality")
        if "view" in f.schema_arrow.names:  # schema 1.5: a rig's world rows hold no image (its section shows them)
            cols.append("view")
        t = f.read(columns=cols)
        # row indices stay the part's: world rows are skipped, not filtered out
        views = t.column("view").to_pylist() if "view" in cols else [None] * t.num_rows
        ids = t.column("image_id").to_pylist()
        status = t.column("status").to_pylist()
        error_texts = t.column("error").to_pylist()
        counts = t.column("num_people").to_pylist()
        people = t.column("people").to_pylist()
        for r, (image_id, s, e, n, ppl) in enumerate(zip(ids, status, error_texts, counts, people, strict=True)):
            if views[r] == "world":
                continue
            st.rows += 1
            if s != "ok":
                reason = errors.reason(e)
                st.errors[reason] += 1
                ex = st.error_examples.setdefault(reason, [])
                if len(ex) < 3:
                    ex.append(image_id)
                continue
            st.rows_ok += 1
            st.people += n
            st.people_per_image[n] += 1
            for k, person in enumerate(ppl or []):
                q = person.get("quality") if quality_here else None
                st.scores.append(float(person["score"]))
                st.values.append(float(q) if q is not None else (np.nan if st.has_quality else float(person["score"])))
                st.where.append((p, r, k))
    return st


def sample_people(values: list[float], n: int) -> dict[str, list[int]]:
    """Indices of the ``n`` best, ``n`` around the median and ``n`` worst people by value (NaN
    values are never sampled; a person appears in one group only)."""
    v = np.asarray(values, np.float64)
    finite = np.flatnonzero(np.isfinite(v))
    order = finite[np.argsort(-v[finite], kind="stable")].tolist()  # best first
    if len(order) <= 3 * n:  # too few to fill every group: three consecutive slices of the ranking
        best, median, worst = (list(map(int, c)) for c in np.array_split(np.asarray(order, int), 3))
        return {"best": best, "median": median, "worst": worst[::-1]}
    mid = len(order) // 2
    start = min(max(mid - n // 2, n), len(order) - 2 * n)
    return {"best": order[:n], "median": order[start:start + n], "worst": order[::-1][:n]}


# ---------------------------------------------------------------------------------------------
# Charts and images as data URIs


def histogram_png(values: list[float], label: str, bins: int = 20) -> bytes:
    fig = figure()
    ax = fig.add_subplot()
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    ax.hist(v, bins=bins, range=(0.0, 1.0), color="tab:blue", edgecolor="white")
    ax.set_xlabel(label)
    ax.set_ylabel("people")
    ax.set_title(f"{label} per person (n={len(v)})", fontsize=10)
    return png(fig)


def people_per_image_png(counts: Counter) -> bytes:
    fig = figure()
    ax = fig.add_subplot()
    xs = sorted(counts)
    ax.bar([str(x) for x in xs], [counts[x] for x in xs], color="tab:green")
    ax.set_xlabel("people in the image")
    ax.set_ylabel("images")
    ax.set_title("people per image (ok rows)", fontsize=10)
    return png(fig)


# ---------------------------------------------------------------------------------------------
# HTML

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1500px}
h1{font-size:22px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;
font-size:13px} th{background:#f4f4f4} .num{text-align:right} .charts img{margin-right:16px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:12px}
.cell{border:1px solid #ddd;padding:6px} .cell img{max-width:100%;height:auto;display:block}
.cap{font-size:12px;margin-top:4px;word-break:break-all} .missing{color:#a00;font-size:12px}
.note{color:#555;font-size:13px} code{background:#f4f4f4;padding:0 3px}
"""


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list | dict):
        return json.dumps(v)
    return str(v)


def _samples_html(output: Output, st: Stats, config: ReportConfig, skeleton: dict) -> str:
    groups = sample_people(st.values, config.samples_per_group)
    rows_needed: dict[int, set[int]] = {}
    for idx in (i for g in groups.values() for i in g):
        p, r, _ = st.where[idx]
        rows_needed.setdefault(p, set()).add(r)
    parts = output.records()
    rows: dict[tuple[int, int], dict] = {}
    for p, rs in rows_needed.items():
        table = output.read_part(parts[p])
        for r in rs:
            rows[(p, r)] = table.slice(r, 1).to_pylist()[0]
    images: dict[str, object] = {}
    out = []
    thumb = render.RenderConfig(max_side=config.thumb_side, joint_names=False)
    for name in ("best", "median", "worst"):
        out.append(f"<h3>{escape(name)} ({escape(st.key)})</h3>")
        if not groups[name]:
            out.append('<p class="note">no people</p>')
            continue
        out.append('<div class="grid">')
        for idx in groups[name]:
            p, r, k = st.where[idx]
            row = rows[(p, r)]
            caption = f"{row['image_id']} {render.person_label(k, row['people'][k])}"

            def draw(row=row, k=k):
                uri = row["source_uri"]
                if uri not in images:
                    images[uri] = dataset.load_image(uri, config.storage_options)
                return render.overlay(images[uri], row, skeleton, thumb, highlight=k)
            out.append(image_cell(draw, caption))
        out.append("</div>")
    return "\n".join(out)


def diff_pair(output: Output, config: ReportConfig) -> tuple[str, str] | None:
    """What the report compares: ``config.diff``, else the version reported and its parent (both kept)."""
    if config.diff is not None:
        return tuple(config.diff) if config.diff else None  # type: ignore[return-value]
    lineage = versions.read(output.base_uri, config.storage_options)
    entry = next((v for v in (lineage or {}).get("versions", []) if v["version"] == (output.version or 1)), None)
    parent = next((v for v in lineage["versions"] if v["version"] == entry.get("parent")), None) if entry else None
    if parent is None or parent.get("removed_at"):
        return None
    return versions.version(output.base_uri, parent["version"]).ref, output.ref


def parse_diff(output_uri: str, text: str) -> tuple[str, ...]:
    """``--diff vA,vB`` (versions of OUTPUT) or ``--diff A,B`` (outputs); ``--diff none``: no comparison."""
    if text.strip().lower() == "none":
        return ()
    items = [t.strip() for t in text.split(",")]
    if len(items) != 2 or not all(items):
        raise ValueError(f"--diff takes two versions or outputs, e.g. v1,v2; got {text!r}")
    base = layout.split_version(output_uri)[0]
    return tuple(f"{base}@{t}" if t[:1] == "v" and t[1:].isdigit() else t for t in items)


def build_html(output_uri: str, config: ReportConfig | None = None) -> str:
    """The report page for ``output_uri`` as one HTML string."""
    config = config or ReportConfig()
    output = Output.open(output_uri, config.storage_options)
    st = collect(output)
    meta = output.metadata()
    summ = output.read_json(layout.SUMMARY) or {}
    skeleton, settings = meta.get("skeleton") or {}, meta.get("settings") or {}
    title = config.title or f"annotator report: {output_uri}"
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    h = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
         f"<style>{CSS}</style></head><body>", f"<h1>{escape(title)}</h1>",
         f'<p class="note">generated {escape(now)} from {st.parts} committed part(s)</p>']

    h.append("<h2>Counts</h2>")
    per_img = st.people / st.rows_ok if st.rows_ok else 0.0
    h.append(table([("images (rows)", st.rows), ("ok", st.rows_ok), ("errors", st.rows - st.rows_ok),
                     ("people", st.people), ("people per ok image", round(per_img, 3)),
                     ("parts", st.parts), ("people[].quality stored", "yes" if st.has_quality else "no")]))

    h.append("<h2>Errors by reason</h2>")
    if st.errors:
        h.append(table([(k, v, ", ".join(st.error_examples.get(k, []))) for k, v in st.errors.most_common()],
                        ("reason", "images", "examples")))
    else:
        h.append('<p class="note">no error rows</p>')

    h.append("<h2>People per image</h2>")
    h.append('<div class="charts">')
    h.append(f'<img alt="people per image" src="{data_uri(people_per_image_png(st.people_per_image), "image/png")}">')
    h.append("</div>")
    h.append(table([(n, st.people_per_image[n]) for n in sorted(st.people_per_image)], ("people", "images")))

    h.append(f"<h2>{'Quality' if st.has_quality else 'Detector score'}</h2>")
    if not st.has_quality:
        h.append('<p class="note">This output has no <code>people[].quality</code> (written before schema 1.1): '
                 "the histogram and the samples use the detector score.</p>")
    h.append('<div class="charts">')
    h.append(f'<img alt="{escape(st.key)} histogram" src="{data_uri(histogram_png(st.values, st.key), "image/png")}">')
    if st.has_quality:
        h.append(f'<img alt="detector score histogram" '
                 f'src="{data_uri(histogram_png(st.scores, "detector score"), "image/png")}">')
    h.append("</div>")
    v = np.asarray(st.values, np.float64)
    keep_rows = [(t, int(np.sum(v >= t)), f"{100 * np.mean(v >= t):.1f}%" if len(v) else "-")
                 for t in config.thresholds]
    flag = "--min-quality" if st.has_quality else "--min-score"
    h.append(f"<p>What <code>annotator filter {escape(flag)} T</code> keeps:</p>")
    h.append(table(keep_rows, (f"T ({st.key})", "people kept", "share")))

    h.append("<h2>Throughput</h2>")
    if summ:
        tp = [(k, _fmt(summ[k])) for k in ("images", "people", "elapsed_seconds", "images_per_second",
                                           "shards_total", "shards_committed", "shards_skipped") if k in summ]
        if "people_per_second" in summ:
            tp.append(("people_per_second", _fmt(summ["people_per_second"])))
        elif summ.get("elapsed_seconds"):
            tp.append(("people_per_second", f"{summ.get('people', 0) / summ['elapsed_seconds']:.4g}"))
        h.append(table(tp))
        stages = summ.get("stage_seconds") or {}
        rates = summ.get("stage_images_per_worker_second") or {}
        if stages or rates:
            h.append(table([(s, _fmt(stages.get(s, "")), _fmt(rates.get(s, ""))) for s in sorted({*stages, *rates})],
                            ("stage", "seconds", "images per worker-second")))
    else:
        h.append('<p class="note">no _summary.json (the run has not finished, or this output was written by '
                 "<code>annotator filter</code>)</p>")

    h.append("<h2>Model and settings</h2>")
    model = meta.get("model") or {}
    info = [("schema version", meta.get("schema_version", "?")), ("annotator version", meta.get("version", "?"))]
    info += [(f"model.{k}", _fmt(v)) for k, v in sorted(model.items())]
    info += [("skeleton", f"{skeleton.get('name', '')} ({len(skeleton.get('joint_names', []))} joints, "
                          f"{len(skeleton.get('edges', []))} edges)")]
    info += [(f"settings.{k}", _fmt(v)) for k, v in sorted(settings.items())]
    if meta.get("filter"):
        info += [(f"filter.{k}", _fmt(v)) for k, v in sorted(meta["filter"].items())]
    h.append(table(info))

    h.append(tracks.section_html(output, skeleton, config.storage_options))  # videos (schema 1.3)
    h.append(rig_view.section_html(output, skeleton, config.storage_options))  # rigs (schema 1.5)

    pair = diff_pair(output, config)
    if pair:
        h.append(diff.section_html(diff.compare(*pair, storage_options=config.storage_options),
                                   title=f"Changes: {pair[0]} -> {pair[1]}"))

    h.append("<h2>Samples</h2>")
    h.append(f'<p class="note">People ranked by {escape(st.key)}; the ranked person in colour, others grey. '
             "Joints: blue = left, red = right; hollow = low confidence.</p>")
    h.append(_samples_html(output, st, config, skeleton))
    h.append("</body></html>")
    return "\n".join(h)


def write_report(output_uri: str, out_file: str | None = None, config: ReportConfig | None = None) -> str:
    """Write the page to ``out_file`` (default ``OUTPUT/report.html``) and return its location."""
    config = config or ReportConfig()
    target = out_file or sources.join(Output.open(output_uri, config.storage_options).uri, "report.html")
    page = build_html(output_uri, config)
    fs, path = sources.filesystem(target, config.storage_options)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    fs.pipe_file(path, page.encode("utf-8"))
    return target
