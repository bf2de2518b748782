"""Run counters, the progress bar and the run summary.

Counters are folded per shard from the encoded rows (what the dataset really holds), so the
summary always agrees with the Parquet files.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc


@dataclass
class RunStats:
    images: int = 0
    images_ok: int = 0
    images_error: int = 0
    people: int = 0
    shards_committed: int = 0
    shards_skipped: int = 0
    errors_by_reason: Counter = field(default_factory=Counter)
    people_per_image: Counter = field(default_factory=Counter)
    started: float = field(default_factory=time.time)

    def add_table(self, table: pa.Table) -> None:
        n = table.num_rows
        status = table.column("status")
        ok = int(pc.sum(pc.equal(status, "ok")).as_py() or 0)
        self.images += n
        self.images_ok += ok
        self.images_error += n - ok
        self.people += int(pc.sum(table.column("num_people")).as_py() or 0)
        for err in table.column("error").drop_null().to_pylist():
            self.errors_by_reason[err.split(":", 1)[0]] += 1
        for k, v in zip(*pc.value_counts(table.column("num_people")).flatten(), strict=True):
            self.people_per_image[str(k.as_py())] += v.as_py()

    def summary(self, **extra) -> dict:
        elapsed = time.time() - self.started
        return {
            "images": self.images, "images_ok": self.images_ok, "images_error": self.images_error,
            "people": self.people, "shards_committed": self.shards_committed,
            "shards_skipped": self.shards_skipped,
            "errors_by_reason": dict(self.errors_by_reason),
            "people_per_image": dict(sorted(self.people_per_image.items(), key=lambda kv: int(kv[0]))),
            "elapsed_seconds": round(elapsed, 2),
            "images_per_second": round(self.images / elapsed, 3) if elapsed > 0 else None,
            **extra,
        }


class ProgressBar:
    """tqdm over images with people/s and error rate; silent when disabled."""

    def __init__(self, total: int, enabled: bool = True):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="img", desc="annotating", dynamic_ncols=True)
        self.started = time.time()

    def update(self, stats: RunStats, n: int) -> None:
        if self.bar is None:
            return
        elapsed = max(time.time() - self.started, 1e-6)
        self.bar.set_postfix(people=stats.people, people_s=f"{stats.people / elapsed:.1f}",
                             errors=stats.images_error, refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
