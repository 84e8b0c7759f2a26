"""Which stop signals this process has received, for code that must tell a failure from a stop.

SIGTERM stops every process of a SLURM job step at once, W&B's service process among them, so a run
that received it may fail in a logger call before it gets to stop in order. Whoever handles a signal
(chainrule.callbacks.signals) notes it here; chainrule.training.fitting then ends such a run with one
line instead of a traceback.
"""

import signal

_received: set[int] = set()


def note(signum: int) -> None:
    _received.add(signum)


def received(signum: int = signal.SIGTERM) -> bool:
    return signum in _received


def forget() -> None:
    """A new fit starts (a multirun's next job in the same process)."""
    _received.clear()
