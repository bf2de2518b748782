"""Error text, as rows, shards and rounds carry it: ``reason_code: first line of the message``
(at most 300 characters). Every stage and runner writes it with ``text`` and reads the code back
with ``reason``, so ``errors_by_reason``, ``annotator status`` and the report group errors alike.
"""

from __future__ import annotations

# Reason codes of the read stage, inference and the runners (decode's own are in ``annotator.pipeline.decode``).
EMPTY_SHARD = "empty_shard"
BAD_CAMERA = "bad_camera"
SHARD_READ_ERROR = "shard_read_error"
CHANGED = "changed_since_plan"
TIMEOUT = "timeout"
INFERENCE_ERROR = "inference_error"
PROGRAMMING_ERROR = "programming_error"  # a bug in inference: fails the shard, stops the job
INCOMPLETE = "incomplete"
COMMIT_ERROR = "commit_error"
ROUND_ERROR = "round_error"


def describe(e: BaseException | str) -> str:
    """``Type: message`` of an exception (a string as it is), first line, at most 300 characters.

    A first line that is only a heading (TensorFlow's ``Graph execution error:``, whose cause comes
    after the node's stack) gets the last line that says something: ``assertion failed: [...]``,
    not the ``[[{{node ...}}]]`` tag after it."""
    msg = e if isinstance(e, str) else f"{type(e).__name__}: {e}"
    lines = [line.strip() for line in msg.splitlines() if line.strip()]
    if not lines:
        return ""
    first = lines[0]
    if first.endswith(":") and len(lines) > 1:
        cause = next((line for line in reversed(lines[1:]) if not line.startswith("[[")), "")
        first = f"{first} {cause}".strip()
    return first[:300]


def text(code: str, e: BaseException | str) -> str:
    return f"{code}: {describe(e) or code}"


def reason(error: str | None) -> str:
    """The reason code of an error text: the part before the first colon."""
    return (error or "unknown").split(":", 1)[0].strip() or "unknown"
