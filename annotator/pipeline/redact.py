"""Credentials inside URIs, kept out of everything annotator stores or prints.

Why: a URI is copied into many places a job leaves behind (``_plan/plan.json``, ``_summary.json``,
the dataset card, log lines, error rows), and each of those outlives the job and is shared far more
widely than the credentials were meant to be. Two forms carry a secret:

* user info, ``scheme://user:password@host/...`` or ``scheme://token@host/...``;
* a query string with a signature or token, ``https://host/x?X-Amz-Signature=...`` or ``?sig=...``
  (presigned URLs, Azure SAS tokens, ``?access_token=``).

``uri`` returns the URI with those parts replaced by ``***``; ``text`` does the same to every URI
inside free text (a log line, an exception message). ``LogFilter`` applies ``text`` to log records,
so even a library's log line that echoes a URI is redacted before any handler writes it.
"""

from __future__ import annotations

import logging
import re

MASK = "***"

# ``abfs://container@account.dfs.core.windows.net``: Azure's user info names a container, not a
# credential (a password after a colon still is one).
_NAMED_CONTAINER = frozenset({"abfs", "abfss", "az", "adl", "wasb", "wasbs"})

# query parameters whose value is a credential (matched on the lower-cased name)
_SECRET_PARAM = re.compile(
    r"(sig|signature|token|secret|password|passwd|pwd|credential|key|auth|session|apikey|api_key|code)",
    re.IGNORECASE)

_URI = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>`]+")
_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://([^/@?#]*)@")
_PARAM = re.compile(r"([?&;])([^=&;#]+)=([^&;#]*)")


def _userinfo_secret(scheme: str, info: str) -> bool:
    return ":" in info or scheme.lower() not in _NAMED_CONTAINER


def uri(value: str) -> str:
    """``value`` with the user info and the credential query values replaced by ``***``."""
    if "://" not in value:
        return value
    m = _USERINFO.match(value)
    if m and _userinfo_secret(m.group(1), m.group(2)):
        value = f"{m.group(1)}://{MASK}@{value[m.end():]}"
    q = value.find("?")
    if q < 0:
        return value

    def param(p: re.Match) -> str:
        secret = _SECRET_PARAM.search(p.group(2)) and p.group(3) not in ("", MASK)
        return f"{p.group(1)}{p.group(2)}={MASK}" if secret else p.group(0)
    return value[:q] + _PARAM.sub(param, value[q:])


def has_credentials(value: str) -> bool:
    return uri(value) != value


def text(value: str) -> str:
    """Every URI inside ``value`` redacted (``uri``); the rest unchanged."""
    if "://" not in value:
        return value
    def one(m: re.Match) -> str:
        found = m.group(0)
        cut = len(found.rstrip(",.:)]}"))  # the sentence's punctuation after a URI is not part of it
        return uri(found[:cut]) + found[cut:]
    return _URI.sub(one, value)


def obj(value):
    """``text`` over every string inside a JSON-like value (dicts, lists, strings)."""
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {k: obj(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(obj(v) for v in value)
    return value


class LogFilter(logging.Filter):
    """Redacts URIs with credentials in a record's message (and its traceback) before a handler
    formats it: attached to handlers, so it covers every library's records, not only annotator's."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record: let the handler report it as it would
            return True
        clean = text(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            import traceback

            tb = "".join(traceback.format_exception(*record.exc_info))
            if text(tb) != tb:
                record.msg, record.args = f"{clean}\n{text(tb)}", None
                record.exc_info, record.exc_text = None, None
        return True
