"""Who wants to know that a call ended: a tiny listener list the call log feeds.

A call can change what is known about a provider (the embedded model started, a server
stopped answering); faces such as the panel listen here to update their rows, without
the pipeline knowing they exist. Listeners run on the thread that ended the call
(usually nbllm's event loop): they must return at once and never raise into the call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["listen", "ended"]

Listener = Callable[[Any], None]
"""Called with the call's `Answer` (its `provider`, `error`, `reason`)."""

_listeners: list[Listener] = []
_lock = threading.Lock()
log = logging.getLogger("nbllm")


def listen(listener: Listener) -> Callable[[], None]:
    """Call `listener(answer)` whenever a call ends; returns the function that stops it."""
    with _lock:
        _listeners.append(listener)

    def stop() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return stop


def ended(answer: Any) -> None:
    """Tell every listener that a call ended with `answer` (a listener's failure is logged, never raised)."""
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(answer)
        except Exception:  # a face's bookkeeping must never fail the call
            log.debug("a call listener failed", exc_info=True)
