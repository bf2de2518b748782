"""``annotator`` with a SIGKILL at a chosen point of its writes: the driver kill matrix.

    python -m tests.reliability.killer RULE -- run INPUT OUTPUT [annotator options]

``RULE`` is ``OP:PATTERN:N:MODE[:CONTAINS]``: the N-th time this process does ``OP`` (``write``:
fsspec ``pipe_file``; ``move``: fsspec ``mv``, the sink's publish) on a local path matching the
regex ``PATTERN`` (and, for writes, whose bytes contain ``CONTAINS``), it kills itself with SIGKILL

* ``before`` the operation,
* ``half``-way through it (writes only: the first half of the bytes reach the file, as when a
  process dies inside ``write``), or
* ``after`` it.

The kill happens at the storage layer, below annotator: whatever the sink does (write in place,
write then rename), the test sees what a real crash at that instant leaves. Points that only
exist on object stores (a PUT is atomic there) are not modelled here.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from dataclasses import dataclass

# the points of ``run_matrix.py`` (name -> rule and what it leaves behind); CI runs a few of them
POINTS = {
    "planning": ("write:/_plan/members-:1:half", "a half-written chunk of the plan, no plan.json"),
    "plan-frozen": ("write:/_plan/plan\\.json:1:after", "the frozen plan, nothing else"),
    "fingerprint": ("write:/\\.?_fingerprint\\.json:1:after", "plan and fingerprint; actors starting"),
    "part-half": ("write:/_attempts/.*/parts/part-:2:half", "the 2nd part half-written (an attempt)"),
    "part-written": ("write:/_stats/\\.?part-:2:before", "the 2nd part written, its commit record not"),
    "record-half": ("write:/_commits/\\.?part-:2:half", "the 2nd commit record half-written"),
    "before-publish": ("move:/parts/part-:2:before", "the 2nd shard committed, its part not published"),
    "manifest-rewrite": ("write:/\\.?_manifest\\.json:2:half", "the running manifest half-rewritten"),
    "final-manifest": ("write:/\\.?_manifest\\.json:1:half:\"final\": true", "the final manifest half-written"),
    "summary": ("write:/\\.?_summary\\.json:1:half", "everything committed, the summary half-written"),
}


@dataclass
class Rule:
    op: str
    pattern: re.Pattern
    n: int
    mode: str
    contains: bytes = b""
    seen: int = 0

    @classmethod
    def parse(cls, text: str) -> Rule:
        op, pattern, n, mode, *rest = text.split(":", 4)
        assert op in ("write", "move") and mode in ("before", "half", "after"), text
        assert op == "write" or mode != "half", "a move cannot stop half-way"
        return cls(op, re.compile(pattern), int(n), mode, rest[0].encode() if rest else b"")

    def hit(self, op: str, path: str, data: bytes = b"") -> bool:
        if op != self.op or not self.pattern.search(path) or self.contains not in data:
            return False
        self.seen += 1
        return self.seen == self.n


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install(rule: Rule) -> None:
    from fsspec.implementations.local import LocalFileSystem

    pipe_file, mv = LocalFileSystem.pipe_file, LocalFileSystem.mv

    def killing_pipe_file(self, path, value, *args, **kwargs):
        data = bytes(value)
        if not rule.hit("write", str(path), data):
            return pipe_file(self, path, value, *args, **kwargs)
        if rule.mode == "before":
            die()
        if rule.mode == "half":
            local = self._strip_protocol(path)
            os.makedirs(os.path.dirname(local), exist_ok=True)
            with open(local, "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
            die()
        pipe_file(self, path, value, *args, **kwargs)
        die()

    def killing_mv(self, path1, path2, *args, **kwargs):
        if not rule.hit("move", str(path2)):
            return mv(self, path1, path2, *args, **kwargs)
        if rule.mode == "before":
            die()
        mv(self, path1, path2, *args, **kwargs)
        die()

    LocalFileSystem.pipe_file, LocalFileSystem.mv = killing_pipe_file, killing_mv


def main(argv: list[str]) -> int:
    rule, sep, *args = argv
    assert sep == "--", "usage: killer RULE -- ANNOTATOR ARGS"
    install(Rule.parse(POINTS[rule][0] if rule in POINTS else rule))
    from annotator import cli

    return cli.main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
