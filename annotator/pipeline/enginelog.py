"""Quiet by default: annotator's own lines on the terminal, the engines' lines in a log file.

Why: a user's terminal is for what annotator says (the progress bar, the summary, warnings and errors
they must act on). TensorFlow, absl, Ray and Beam print start-up notices meant for their own
developers (absl's "All log messages before absl::InitializeLog()", oneDNN's "custom operations are
on", Ray's core_worker notice about actor constructor arguments, ray #53727), once per actor on a
cluster; a user who sees them cannot tell them from a real problem. Dropping them would lose the
lines that explain a real failure, so they go to a file instead, and ``-v`` shows them again.

What goes where, quiet (the default):

* Python logging: every record at INFO and above goes to the file; the terminal shows ``annotator``'s
  own records at WARNING and above.
* What engines write to file descriptor 2 from C++ (TensorFlow, absl, Ray's core worker in the
  driver, gRPC): fd 2 points at the file; Python's ``sys.stderr`` (the progress bar, annotator's error
  lines, tracebacks) stays on the terminal.
* Ray's own console loggers and the worker output Ray forwards to the driver (``log_to_driver``):
  sent to ``engine_stream()`` by ``runners.ray_cluster``; Ray's session directory keeps its own copy.

With ``-v`` nothing is redirected (the terminal shows everything, as before) and the file still
gets every Python log record. The file is written under the temp dir while the job runs (``--overwrite``
empties the output first) and moved to ``OUTPUT/_logs/`` when the command ends. Every handler
redacts URIs with credentials (``pipeline.redact``).

Never imports Ray or Beam.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import tempfile
import time

from annotator.pipeline import redact

LOGS = "_logs"  # under OUTPUT
KEEP_DAYS = 7.0  # how long logs that had no output to go to stay in the temp folder
OWN_LOGGERS = ("annotator", "__main__")
FORMAT = "%(levelname)s %(name)s: %(message)s"
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_current: EngineLog | None = None
_last: EngineLog | None = None


class _OwnRecords(logging.Filter):
    """The terminal's filter when quiet: annotator's own records only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".", 1)[0] in OWN_LOGGERS


def _is_fd2(stream) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):  # pytest's capture, a StringIO: not the process's fd 2
        return False


class EngineLog:
    """One command's engine log (see the module doc); ``start`` makes it, ``close`` ends it."""

    def __init__(self, verbose: bool, command: str):
        self.verbose = verbose
        self.command = command
        folder = os.path.join(tempfile.gettempdir(), "annotator-logs")
        os.makedirs(folder, exist_ok=True)
        _prune(folder)
        self.name = f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        self.path = os.path.join(folder, self.name)
        self.stream = open(self.path, "a", buffering=1, encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
        self.destination: tuple[str, dict | None] | None = None
        self.published: str | None = None
        self._saved_stderr = None
        self._saved_fd: int | None = None
        self.handlers: list[logging.Handler] = []
        self._redirect_fd2()
        self._configure_logging()
        # after an embedded Ray's own exit hook (hooks run last-registered first): its shutdown lines too
        atexit.register(self._at_exit)

    @property
    def quiet(self) -> bool:
        return not self.verbose

    def _redirect_fd2(self) -> None:
        if self.verbose or not _is_fd2(sys.stderr):
            return
        sys.stderr.flush()
        self._saved_fd = os.dup(2)
        os.dup2(self.stream.fileno(), 2)
        self._saved_stderr = sys.stderr
        sys.stderr = os.fdopen(os.dup(self._saved_fd), "w", buffering=1, encoding=sys.stderr.encoding or "utf-8",
                               errors="backslashreplace")

    def _configure_logging(self) -> None:
        root = logging.getLogger()
        self._root_level = root.level
        root.setLevel(logging.INFO)
        to_file = logging.StreamHandler(self.stream)
        to_file.setFormatter(logging.Formatter(FILE_FORMAT))
        to_file.setLevel(logging.INFO)
        terminal = logging.StreamHandler(sys.stderr)
        terminal.setFormatter(logging.Formatter(FORMAT))
        terminal.setLevel(logging.INFO if self.verbose else logging.WARNING)
        if self.quiet:
            terminal.addFilter(_OwnRecords())
        for h in (to_file, terminal):
            h.addFilter(redact.LogFilter())
            root.addHandler(h)
        self.handlers = [to_file, terminal]
        logging.captureWarnings(True)  # Python warnings (deprecations in engines) are log records too
        self.stream.write(f"# annotator {self.command}, pid {os.getpid()}, {time.strftime('%Y-%m-%d %H:%M:%S %z')}"
                          f"{' (verbose: engine lines went to the terminal)' if self.verbose else ''}\n")

    def close(self, restore: bool = True) -> str | None:
        """End the command's logging; copy the file to ``OUTPUT/_logs/`` when a destination was set.
        Returns where the log is (None when it holds nothing). ``restore=False`` (the CLI's last act)
        leaves fd 2 on the file, so what engines print while the process exits is kept too, and the
        file is copied again at exit."""
        global _current
        root = logging.getLogger()
        for h in self.handlers:
            h.flush()
            root.removeHandler(h)
        self.handlers = []
        root.setLevel(self._root_level)
        logging.captureWarnings(False)
        if restore:
            self.restore()
        if _current is self:
            _current = None
        self.stream.flush()
        if self.destination is not None:
            self.published = self._publish(*self.destination)
            if self.published:
                return self.published
        return self.path if os.path.getsize(self.path) > _header_size(self.path) else None

    def restore(self) -> None:
        """fd 2 and ``sys.stderr`` as they were before ``start``."""
        if self._saved_fd is None:
            return
        sys.stderr.flush()
        os.dup2(self._saved_fd, 2)
        os.close(self._saved_fd)
        terminal, sys.stderr = sys.stderr, self._saved_stderr
        terminal.close()
        self._saved_fd = None

    def _at_exit(self) -> None:
        try:
            self.stream.close()
            if self.published and self.destination is not None:
                self._publish(*self.destination)  # again: with the lines written since ``close``
                os.unlink(self.path)
            elif os.path.getsize(self.path) <= _header_size(self.path):
                os.unlink(self.path)
        except Exception:  # noqa: BLE001,S110 - at exit nothing can be reported; the temp file stays
            pass

    def _publish(self, output: str, storage_options: dict | None) -> str | None:
        from annotator.pipeline import sources

        target = sources.join(sources.absolute(output), LOGS, self.name)
        try:
            fs, path = sources.filesystem(target, storage_options)
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            with open(self.path, "rb") as f:
                fs.pipe_file(path, f.read())
        except Exception as e:  # noqa: BLE001 - the log stays in the temp dir, and we say so
            logging.getLogger(__name__).warning("engine log kept at %s (could not copy it to %s: %s)", self.path,
                                                redact.uri(target), e)
            return None
        return redact.uri(target)


def _prune(folder: str, keep_days: float = KEEP_DAYS) -> None:
    """Logs of commands without an output (``status``, ``submit``, a run that never started) stay in
    the temp folder; a week is enough to read them."""
    cutoff = time.time() - keep_days * 86400
    for entry in os.scandir(folder):
        try:
            if entry.name.endswith(".log") and entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
        except OSError:  # another process's file, just removed or not ours: leave it
            pass


def _header_size(path: str) -> int:
    with open(path, "rb") as f:
        return len(f.readline())


def start(verbose: bool, command: str) -> EngineLog:
    """Begin a command's engine log (closes one left open by an earlier command in this process)."""
    global _current, _last
    if _current is not None:
        _current.close()
    if _last is not None:
        _last.restore()  # a command before this one in this process left fd 2 on its file
    _current = _last = EngineLog(verbose, command)
    return _current


def current() -> EngineLog | None:
    return _current


def engine_stream():
    """Where engines' console output goes: the log file when quiet, else None (leave it on the terminal)."""
    return _current.stream if _current is not None and _current.quiet else None


def set_destination(output: str, storage_options: dict | None = None) -> None:
    """The job's output: the log is moved to ``OUTPUT/_logs/`` when the command ends."""
    if _current is not None:
        _current.destination = (output, storage_options)
