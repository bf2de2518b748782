"""The driver's side of a streaming round: label rows arrive in blocks of any shards, in any order,
and possibly twice (Ray re-executes a lost task). ``ShardCollector`` groups them by shard (one
copy of each row: ``shards.ShardRows``), hands each complete shard to a commit as soon as it may
commit (a video shard after the shard before it: ``sequence.CommitOrder``), and says at the end
which shards did not commit and why. Engine-free: the Ray runner feeds it its dataset's blocks."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future

import pyarrow as pa

from annotator.pipeline import errors
from annotator.pipeline.lock import LockLostError
from annotator.pipeline.sequence import CommitOrder
from annotator.pipeline.shards import ShardRows, by_shard


class ShardCollector:
    """Groups the streamed rows of ``work``'s shards and commits each complete one through
    ``submit(shard_id, tables, continue_previous) -> Future``; at most ``max_pending`` commits in
    flight before ``add`` waits for the oldest. ``last_round``: a shard whose predecessor failed
    for good then commits with its tracks started afresh instead of failing too."""

    def __init__(self, work: dict[str, list[str] | None], order: CommitOrder,
                 submit: Callable[[str, list[pa.Table], bool], Future], max_pending: int, last_round: bool):
        self.submit, self.max_pending, self.last_round = submit, max_pending, last_round
        self.rows = {s: ShardRows() for s in work}
        self.futures: dict[str, Future] = {}
        self.failures: dict[str, str] = {}
        self.order = order
        self.waiting: dict[str, list[pa.Table]] = {}

    def add(self, table: pa.Table) -> None:
        for shard_id, piece in by_shard(table):
            rows = self.rows.get(shard_id)
            if rows is None:
                continue
            rows.add(piece)
            if rows.complete:
                self.waiting[shard_id] = rows.take()
        self.release()
        self.reap(block=len(self.futures) > self.max_pending)

    def release(self, fresh: bool = False) -> None:
        """Submit the waiting shards that may commit now (``fresh``: the last round's shards whose
        predecessor failed for good, with tracks started afresh)."""
        for shard_id in sorted(self.waiting):
            ok = self.order.can_commit(shard_id)
            if ok or fresh and self.order.blocked_by_failure(shard_id):
                self.futures[shard_id] = self.submit(shard_id, self.waiting.pop(shard_id), ok)

    def reap(self, block: bool = False) -> None:
        """Fold finished commits into the commit order (``block``: wait for the oldest first); a
        lost output lock ends the round at once."""
        if block and self.futures:
            next(iter(self.futures.values())).exception()
        for shard_id in [s for s, f in self.futures.items() if f.done()]:
            err = self.futures.pop(shard_id).exception()
            if isinstance(err, LockLostError):
                raise err
            if err is not None:
                self.failures[shard_id] = errors.text(errors.COMMIT_ERROR, err)
                self.order.fail(shard_id)
            else:
                self.order.done(shard_id)
        self.release()

    def finish(self) -> dict[str, str]:
        """Wait for the commits; returns the shards that failed here, with reasons (a shard that
        never completed is the caller's to name: ``why_incomplete``)."""
        for s, r in self.rows.items():
            if r.fail or not r.complete and not r.taken:
                self.order.fail(s)
        while self.futures or self.waiting:
            while self.futures:
                self.reap(block=True)
            if self.waiting:  # what still waits has a predecessor that did not commit this round
                if self.last_round:
                    self.release(fresh=True)
                if not self.futures:
                    for shard_id in list(self.waiting):
                        self.failures[shard_id] = self.order.waiting_reason(shard_id)
                        self.order.fail(shard_id)
                        del self.waiting[shard_id]
        self.failures.update({s: r.fail for s, r in self.rows.items() if r.fail and s not in self.failures})
        return self.failures

    def why_incomplete(self, shard_id: str) -> str:
        return self.rows[shard_id].why_incomplete()
