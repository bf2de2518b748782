"""``annotator status`` on outputs in each state, read from the small state files only."""

from __future__ import annotations

import json
import os
import socket
import time

from annotator import cli
from annotator.outputs import status
from annotator.pipeline import encode, sink


def _output(tmp_path, shards_total=3):
    out = tmp_path / "out"
    s = sink.DatasetSink(str(out), fingerprint="fp")
    s.makedirs()
    recs = {}
    for sid, errs in (("000000", {}), ("000001", {"b": "truncated: x", "c": "not_an_image: y"})):
        t = encode.to_table([encode.ImageRecord(i, f"/x/{i}", sid, error=errs.get(i)) for i in ("a", "b", "c")])
        recs[sid] = s.write_shard(sid, t)
    (out / "_plan").mkdir()
    (out / "_plan" / "plan.json").write_text(json.dumps({"num_shards": shards_total, "num_members": 9}))
    return out, s, recs


def test_status_of_a_finished_job(tmp_path, capsys):
    out, s, recs = _output(tmp_path)
    s.write_manifest(recs, final=True)
    s.write_json("_summary.json", {"attempt_id": "r1", "failed_shards": {"000002": "timeout: too slow"}})
    s.write_json("_progress.json", {"state": "failed", "attempt_id": "r1", "shards_failed": 1,
                                    "images_per_second": 2.5, "people_per_second": 1.0, "error_rate": 0.25,
                                    "updated_at": time.time() - 1})
    st = status.read(str(out))
    assert (st["shards_total"], st["shards_committed"], st["rows"], st["rows_ok"], st["rows_error"]) == (3, 2, 6, 4, 2)
    assert st["errors_by_reason"] == {"truncated": 1, "not_an_image": 1}
    assert st["state"] == "failed" and st["failed_shards"] == {"000002": "timeout: too slow"}
    assert cli.main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2/3 committed, 1 failed" in text and "shard 000002: timeout" in text
    assert cli.main(["status", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows_error"] == 2


def test_status_of_a_running_and_of_an_interrupted_job(tmp_path):
    out, s, recs = _output(tmp_path)
    s.write_manifest({"000000": recs["000000"]}, final=False)  # the manifest lags behind the commits
    live = {"shards_total": 3, "shards_committed": 2, "rows": 6, "rows_ok": 4, "rows_error": 2, "people": 0,
            "errors_by_reason": {"truncated": 1, "not_an_image": 1}}
    s.write_json("_progress.json", {"state": "running", "dataset": live, "updated_at": time.time() + 1,
                                    "eta_seconds": 12.0, "images_per_second": 3.0, "people_per_second": 2.0,
                                    "error_rate": 0.1})
    (out / "_lock").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                           "heartbeat_at": time.time()}))
    st = status.read(str(out))
    assert st["state"] == "running" and st["shards_committed"] == 2 and st["rows"] == 6
    assert "ETA 12 s" in status.to_text(st)
    (out / "_lock").unlink()  # the driver died: no live lock
    assert status.read(str(out))["state"] == "interrupted"
