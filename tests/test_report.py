"""``annotator report`` on a real output, opened in real headless Chromium (Debian's ``chromium``,
networking features off): the page renders and every image in it loads; the numbers on it are the
dataset's; with stored quality the samples are ranked by it."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest

from annotator.outputs import dataset, report
from annotator.pipeline import layout
from tests.helpers.jobs import annotator
from tests.helpers.shared_output import rewritten, shared_output, without_quality

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-extensions", "--disable-default-apps", "--mute-audio"]
CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var out = imgs.map(function (i) { return [i.complete, i.naturalWidth, i.naturalHeight]; });
  var pre = document.createElement('pre'); pre.id = 'img-check';
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});
</script>"""

pytestmark = pytest.mark.slow  # runs a job


@pytest.fixture(scope="module")
def labels(tmp_path_factory, samples_dir, default_model_path) -> Path:
    return shared_output(tmp_path_factory, samples_dir)


@pytest.fixture(scope="module")
def labels_q(labels) -> Path:
    """The job's own output: its people carry the quality the pipeline computed."""
    return labels


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "headless Chromium is required: apt-get install -y chromium"
    return exe


def loaded_images(page: Path, tmp_path: Path) -> list[list]:
    """Open ``page`` (plus a local load-event script that lists every image's load state) in
    headless Chromium and return ``[complete, naturalWidth, naturalHeight]`` per image."""
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
    proc = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                           "--virtual-time-budget=20000", "--dump-dom", probe.as_uri()],
                          capture_output=True, text=True, timeout=180)
    m = re.search(r'<pre id="img-check">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"no image report in the DOM (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(html.unescape(m.group(1)))


def test_report_renders_in_chromium_with_every_image_loaded(labels, tmp_path):
    page = tmp_path / "report.html"
    proc = annotator("report", str(labels), "--out", str(page))
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = page.read_text()
    n_img = len(re.findall(r"<img\b", text))
    assert n_img >= 2 + 3  # two charts and a sample per person (3 people)
    states = loaded_images(page, tmp_path)
    assert len(states) == n_img
    assert all(complete and w > 0 and h > 0 for complete, w, h in states), states


def test_report_is_self_contained(labels, tmp_path):
    page = Path(report.write_report(str(labels), str(tmp_path / "r.html")))
    text = page.read_text()
    assert "<script" not in text.lower()
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", text), "every resource must be inline"
    assert "@import" not in text and "url(" not in text


def test_report_numbers_are_the_datasets(labels, tmp_path):
    text = Path(report.write_report(str(labels), str(tmp_path / "r.html"))).read_text()
    table = dataset.read_table(str(labels))
    rows = table.to_pylist()
    assert f"<td>images (rows)</td><td class=\"num\">{len(rows)}</td>" in text
    assert f"<td>people</td><td class=\"num\">{sum(r['num_people'] for r in rows)}</td>" in text
    for reason in ("truncated", "not_an_image"):
        assert f"<td>{reason}</td><td class=\"num\">1</td>" in text
    meta = layout.Output(str(labels)).metadata()
    assert meta["model"]["sha256"] in text
    assert "<td>settings.num_aug</td><td>1</td>" in text
    assert "Quality</h2>" in text and "no <code>people[].quality</code>" not in text
    summ = layout.Output(str(labels)).read_json(layout.SUMMARY)
    assert f"<td>images_per_second</td><td>{report._fmt(summ['images_per_second'])}</td>" in text


def test_samples_are_ranked_by_stored_quality(labels_q, tmp_path):
    text = Path(report.write_report(str(labels_q), str(tmp_path / "r.html"))).read_text()
    assert "Quality</h2>" in text and "quality stored</td><td>yes" in text
    groups = {}
    for name in ("best", "median", "worst"):
        section = text.split(f"<h3>{name} (quality)</h3>", 1)[1].split("<h3>", 1)[0]
        groups[name] = [float(q) for q in re.findall(r'class="cap">[^<]* q ([0-9.]+)</div>', section)]
    assert all(groups.values()), groups
    assert min(groups["best"]) >= max(groups["median"]) >= max(groups["worst"])
    stored = sorted(p["quality"] for r in dataset.read_table(str(labels_q)).to_pylist() for p in r["people"])
    assert max(groups["best"]) == pytest.approx(stored[-1], abs=0.005)
    assert min(groups["worst"]) == pytest.approx(stored[0], abs=0.005)


def test_unreadable_image_is_a_caption_not_a_broken_image(labels_q, tmp_path):
    """Move the images away after labelling: the page still renders, with every remaining <img> loaded."""
    def gone(t: pa.Table) -> pa.Table:
        return t.set_column(t.schema.get_field_index("source_uri"), t.schema.field("source_uri"),
                            pa.array([str(tmp_path / "gone" / i) for i in t.column("image_id").to_pylist()]))

    moved = rewritten(labels_q, tmp_path / "moved", gone)
    page = Path(report.write_report(str(moved), str(tmp_path / "r.html")))
    text = page.read_text()
    assert text.count("image not readable") == 3
    states = loaded_images(page, tmp_path)
    assert len(states) == 3 and all(w > 0 for _, w, _ in states)  # the charts only


def test_output_without_quality_gets_the_detector_score_histogram(labels, tmp_path):
    old = without_quality(labels, tmp_path / "v10")
    text = Path(report.write_report(str(old), str(tmp_path / "r.html"))).read_text()
    assert "Detector score</h2>" in text and "no <code>people[].quality</code>" in text

