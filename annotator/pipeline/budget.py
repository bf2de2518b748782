"""The job's error budget: inference errors that say the model or the node is broken, not the data.

A bad image costs one error row and the job goes on. A model that cannot run (a broken driver, a
wrong build, an op the node lacks) fails on *every* image; turning each into an error row would let
a 10^6-image job "succeed" with 10^6 error rows. So the job stops, with one line that names the
cause and the node, and exits non-zero, when:

* an actor's first ``first_batches`` batches failed on every image (the batch call, then each
  image alone): ``InferenceStage`` notices and marks its rows (``_stop``); the runner stops;
* the job-wide share of inference errors among the images that reached the model passes
  ``max_error_rate`` once ``min_images`` have: the driver checks as rows arrive (Ray), after
  each round (Beam), and at the end of every job;
* a programming error (``TypeError``, ``AttributeError``, ...) escapes the model call: a bug is
  never written down as a row about an image;
* the model's warm-up fails: the actor does not start (``InferenceStage.__init__`` raises).

Shards committed before the stop stay committed; a rerun resumes after the cause is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

# Exceptions that are bugs (ours or a model adapter's), never facts about one image.
PROGRAMMING_ERRORS = (TypeError, AttributeError, NameError, ImportError, SyntaxError, AssertionError,
                      NotImplementedError, RecursionError)
MARK = "error budget: "  # every stop message starts with it (a runner finds it in an engine's wrapped error)


class ErrorBudgetExceeded(RuntimeError):
    """The job stops: inference fails for a reason that is not the images'."""


@dataclass(frozen=True)
class ErrorBudget:
    max_error_rate: float = 0.05  # of the images that reached the model; real jobs stay far below
    min_images: int = 100  # the rate is judged only from this many images on (a first batch proves little)
    first_batches: int = 3  # an actor whose first batches all fail on every image cannot run the model (0: off)

    @classmethod
    def for_run(cls, max_error_rate: float, retry_errors: bool) -> ErrorBudget:
        """A ``--retry-errors`` run infers only rows that failed before: all of them may fail again
        (bad images stay bad), so neither rule can tell a broken model from them there; its rows
        were error rows already, so nothing is lost if they stay so."""
        return cls(max_error_rate=1.0, first_batches=0) if retry_errors else cls(max_error_rate=max_error_rate)

    def check_rate(self, inferred: int, failed: int) -> None:
        """Raise ``ErrorBudgetExceeded`` when ``failed`` of ``inferred`` images pass the budget."""
        if inferred >= self.min_images and failed > self.max_error_rate * inferred:
            raise ErrorBudgetExceeded(
                f"{MARK}{failed} of {inferred} images ({failed / inferred:.1%}) failed in inference, more than "
                f"--max-error-rate {self.max_error_rate:g}: the model or the nodes are failing, not the images "
                f"(see the error rows' reasons with `annotator status`)")


def stop_message(stop: str) -> str:
    """The one line a user reads, from a stop text or an engine's wrapped error containing one."""
    i = stop.find(MARK)
    return stop[i:].splitlines()[0] if i >= 0 else stop.splitlines()[0]


class FirstBatches:
    """An actor's own view: whether its first ``n`` batches all failed on every image. While every
    batch so far has (``doubtful``), the stage holds those rows back as a failure of their shards
    rather than error rows: if the model cannot run, no row blames an image; if it can (a later
    batch works), the next round labels those shards again."""

    def __init__(self, n: int):
        self.n, self.seen, self.all_failed, self.first_error = n, 0, 0, ""

    def add(self, images: int, failures: list[str]) -> bool:
        """Fold one batch (``failures``: the error text of each image that failed); True once the
        first ``n`` batches have all failed on every image."""
        if self.seen < self.n and images:
            self.seen += 1
            if len(failures) == images:
                self.all_failed += 1
                self.first_error = self.first_error or failures[0]
        return self.n > 0 and self.all_failed >= self.n

    @property
    def doubtful(self) -> bool:
        return self.n > 0 and self.seen > 0 and self.all_failed == self.seen
