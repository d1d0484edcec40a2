"""Who wants to know that a call ended: a tiny listener list the call log feeds.

A call can change what is known about a provider (the embedded model started, a server
stopped answering); faces such as the panel listen here to update their rows, without
the pipeline knowing they exist. Listeners run on the thread that ended the call
(usually nbllm's event loop): they must return at once and never raise into the call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .listeners import Listeners

__all__ = ["listen", "ended"]

Listener = Callable[[Any], None]
"""Called with the call's `Answer` (its `provider`, `error`, `reason`)."""

_listeners: Listeners[Any] = Listeners("call listener")


def listen(listener: Listener) -> Callable[[], None]:
    """Call `listener(answer)` whenever a call ends; returns the function that stops it."""
    return _listeners.add(listener)


def ended(answer: Any) -> None:
    """Tell every listener that a call ended with `answer` (a listener's failure is logged, never raised)."""
    _listeners.tell(answer)
