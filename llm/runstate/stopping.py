"""Ctrl-C (SIGINT) and SIGTERM: finish the step, save, exit; a second signal stops at once.

The trainer's safe point is the end of a step (logged, not yet saved). ``StopSignals`` records
the first SIGINT/SIGTERM and says so on stderr; the loop checks ``requested`` after each step,
saves a checkpoint and raises ``Stopped``, which the CLI turns into one line and exit code
``128 + signal`` (130 for SIGINT, 143 for SIGTERM). A second signal restores the default action
and re-delivers itself, so the process ends at once (checkpoints are written atomically, so
even that leaves the previous one loadable).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(Exception):
    """The run stopped early on a signal, after saving; ``code`` is the exit status to use."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.code = 128 + signum
        self.announced = (
            False  # set once the message has been printed (llm.train._say_on_every_rank)
        )


class StopSignals:
    """Context manager installing the handlers (main thread only; elsewhere it does nothing).

    ``requested``: the first signal's number, or None.
    """

    def __init__(self, *, announce: bool = True) -> None:
        self.requested: int | None = None
        self.announce = announce
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:  # noqa: ARG002 - the signal handler signature
        if self.requested is not None:  # the second one: stop now
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.requested = signum
        if self.announce:
            name = signal.Signals(signum).name
            sys.stderr.write(
                f"ticgrpo train: {name} received: stopping after this step and saving "
                "(send it again to stop at once)\n"
            )
            sys.stderr.flush()

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
