"""Ctrl-C (SIGINT) during a sweep: stop cleanly in whatever phase it comes, so that running
the same command again resumes the sweep.

Ray Tune catches SIGINT itself while it runs an experiment: it stops, records the running
trials as stopped (the sink writes them ``STOPPED``) and returns as if the experiment had
ended, so the caller cannot tell an interrupted experiment from a finished one. A sweep runs
two experiments (the teacher, the students) and work between them, so it handles SIGINT for
its whole run instead: the first SIGINT during an experiment asks Tune to stop the same way
(Tune's SIGUSR1 handler, which it installs beside its SIGINT one), anywhere else it raises
``KeyboardInterrupt`` at once; either way :class:`Interrupts.requested` is set and the sweep
ends with :class:`SweepInterrupted` (exit code 130 from the CLI). A second SIGINT always
raises ``KeyboardInterrupt`` at once (what a killed driver leaves is recovered on resume).
"""

from __future__ import annotations

import _thread
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

_TUNE_SIGINT = "TUNE_DISABLE_SIGINT_HANDLER"
# Tune's loggers quieted while an interrupted experiment stops, and to what level: its advice
# to resume with Tuner.restore (the sweep resumes from its own tables), and its experiment
# state's last sync, which can race Ray's own temporary files while stopping and print a
# FileNotFoundError traceback (that state is never read back by the sweep)
_TUNE_LOGGERS = {
    "ray.tune.tune": logging.ERROR,
    "ray.tune.analysis.experiment_analysis": logging.ERROR,
    "ray.tune.execution.experiment_state": logging.CRITICAL,
}


class SweepInterrupted(Exception):
    """The sweep was interrupted (SIGINT); what finished is saved and ``run`` again resumes."""

    def __init__(self, phase: str) -> None:
        super().__init__(
            f"interrupted; run the same command to resume (stopped in the {phase} phase)"
        )
        self.phase = phase


class Interrupts:
    """SIGINT handling for one sweep; ``requested`` once the user interrupted it."""

    def __init__(self) -> None:
        self.requested = False
        self.phase = "setup"  # then "teacher", "student": named when the sweep is interrupted
        self._tune_handler: Any = None  # SIGUSR1's handler when the experiment began
        self._levels: dict[str, int] = {}  # Tune loggers quieted while it stops
        self._installed = False  # our SIGINT handler is in place (main thread only)

    def _handle(self, signum: int, frame: Any) -> None:
        first = not self.requested
        self.requested = True
        stop_tune = signal.getsignal(signal.SIGUSR1)
        if first and self._tune_handler is not None and stop_tune is not self._tune_handler:
            # Tune runs its experiment and has installed its handler: ask it to stop gracefully,
            # without its advice to resume with Tuner.restore (the sweep resumes differently)
            for name, quiet in _TUNE_LOGGERS.items():
                logger = logging.getLogger(name)
                self._levels.setdefault(name, logger.level)
                logger.setLevel(quiet)
            os.kill(os.getpid(), signal.SIGUSR1)
            return
        raise KeyboardInterrupt

    def interrupt(self) -> None:
        """Stop the sweep as a Ctrl-C would (from any thread); where no handler could be
        installed (the sweep runs outside the main thread), nothing can stop it early."""
        if self._installed:
            _thread.interrupt_main(signal.SIGINT)

    @contextlib.contextmanager
    def experiment(self) -> Iterator[None]:
        """Around ``Tuner.fit``: a first SIGINT stops the experiment through Tune."""
        self._tune_handler = signal.getsignal(signal.SIGUSR1)  # Tune installs a new one
        try:
            yield
        finally:
            self._tune_handler = None
            for name, level in self._levels.items():
                logging.getLogger(name).setLevel(level)
            self._levels.clear()


@contextlib.contextmanager
def interruptible() -> Iterator[Interrupts]:
    """Handle SIGINT for the block (from the main thread only: elsewhere Python cannot install
    a handler, and Tune then handles nothing either)."""
    interrupts = Interrupts()
    if threading.current_thread() is not threading.main_thread():
        yield interrupts
        return
    previous = signal.signal(signal.SIGINT, interrupts._handle)
    interrupts._installed = True
    tune_setting = os.environ.get(_TUNE_SIGINT)
    os.environ[_TUNE_SIGINT] = "1"  # Tune leaves SIGINT to us (it still installs SIGUSR1)
    try:
        yield interrupts
    finally:
        interrupts._installed = False
        signal.signal(signal.SIGINT, previous)
        if tune_setting is None:
            os.environ.pop(_TUNE_SIGINT, None)
        else:
            os.environ[_TUNE_SIGINT] = tune_setting
