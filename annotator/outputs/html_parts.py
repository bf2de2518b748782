"""Small pieces of the static HTML report, shared by its sections (``report``, ``tracks``): figures
rendered to PNG off-screen, images as data URIs (one self-contained file), escaped tables."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def figure(width: float = 5.0, height: float = 3.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def jpeg_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def escape(x) -> str:
    return html.escape(str(x))


def image_cell(draw: Callable[[], object], caption: str) -> str:
    """One grid cell: the image ``draw()`` makes (a PIL image) over its caption, or a note where it
    cannot be drawn (a moved or unreadable source is a caption, not a broken page)."""
    try:
        body = f'<img alt="{escape(caption)}" src="{data_uri(jpeg_bytes(draw()), "image/jpeg")}">'
    except Exception as e:  # noqa: BLE001 - any failure to read or draw becomes the note
        body = f'<div class="missing">image not readable: {escape(e)}</div>'
    return f'<div class="cell">{body}<div class="cap">{escape(caption)}</div></div>'


def table(rows: list[tuple], header: tuple | None = None) -> str:
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        cells = []
        for v in row:
            cls = ' class="num"' if isinstance(v, int | float) and not isinstance(v, bool) else ""
            cells.append(f"<td{cls}>{escape(v)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)
