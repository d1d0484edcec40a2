"""A list of callbacks told of each new value, for the few places that announce something to faces.

Why one class: the kernel-wide default (`session.observe`) and finished calls (`call_events.listen`)
both let faces such as the panel follow what changed, with the same rules — subscribing returns the
function that unsubscribes, the callbacks run outside the lock (one may subscribe or unsubscribe), and
one that fails is logged, never raised into whatever announced the value.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Listeners"]

T = TypeVar("T")
log = logging.getLogger("nbllm")


class Listeners(Generic[T]):
    """Callbacks taking a `T`; `loud` logs a failing one as an error (else at debug level)."""

    def __init__(self, what: str, loud: bool = False) -> None:
        self._what, self._loud = what, loud
        self._callbacks: list[Callable[[T], Any]] = []
        self._lock = threading.Lock()

    def add(self, callback: Callable[[T], Any]) -> Callable[[], None]:
        """Call `callback(value)` on every `tell`; returns the function that stops it."""
        with self._lock:
            self._callbacks.append(callback)

        def remove() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return remove

    def tell(self, value: T) -> None:
        """Call every callback with `value`, in the order they were added."""
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(value)
            except Exception:  # one broken callback must not block the others, nor the announcer
                if self._loud:
                    log.exception("nbllm: %s %r failed", self._what, callback)
                else:
                    log.debug("nbllm: %s %r failed", self._what, callback, exc_info=True)

    def __len__(self) -> int:
        return len(self._callbacks)
