"""Kernel-wide state: the default provider/model (with observers) and chat memory.

The default is what `%%llm` without `-p`, `nbllm.ask()` and the panel share. Every
face changes it through `use()` and learns of changes through `observe()`, which
is how a magic in one cell moves a widget in another.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

from .catalog import AUTO, parse_chain
from .config import config_warning
from .errors import ConfigurationError, scrub
from .listeners import Listeners
from .registry import ProviderRegistry, get_registry

__all__ = ["Selection", "current", "use", "observe", "reset_default", "Conversation", "conversation"]


@dataclass(frozen=True)
class Selection:
    """The kernel-wide default: a name (a provider, an alias, a chain like `openai,embedded`, or
    'auto') and an optional model (of a single provider)."""

    provider: str
    model: str | None = None

    def __str__(self) -> str:
        return self.provider + (f" ({self.model})" if self.model else "")


Observer = Callable[[Selection], Any]

_lock = threading.RLock()
_current: Selection | None = None
_observers: "Listeners[Selection]" = Listeners("observer", loud=True)


def current() -> Selection:
    """The default provider and model for this kernel.

    First read from `NBLLM_PROVIDER`/`NBLLM_MODEL` (or the saved default); a name that is
    unknown or disabled gives one `NbllmConfigWarning` and the default is `auto`.
    """
    global _current
    with _lock:
        if _current is None:
            registry = get_registry()
            g = registry.global_settings
            _current = _initial(registry, g.provider or AUTO, g.model, g.provider_source)
        return _current


def selection_for(name: str, model: str | None = None) -> Selection:
    """What `use(name, model)` would make the default; unknown, disabled or unusable → ConfigurationError.

    `ollama:qwen3:8b` is provider ollama with model qwen3:8b; an alias or a chain is kept as
    written, so the panel and `--status` show what the user chose.
    """
    from .routing import resolve

    text = (name or AUTO).strip() or AUTO
    route = resolve(text, model)
    links = parse_chain(text)
    if len(links) == 1 and links[0].provider not in get_registry().aliases:
        link = route.links[0]
        return Selection(link.provider, link.model)
    return Selection(route.name, model)  # a model goes to the first link (as `describe` applies it)


def _initial(registry: ProviderRegistry, name: str, model: str | None, source: str) -> Selection:
    """The first default: `name` if it can be used; else a warning and `auto`."""
    try:
        selection = selection_for(name)
    except ConfigurationError as exc:
        problem = str(exc)
    else:
        return Selection(selection.provider, model or selection.model)
    what = f"{source}={name!r}" if source == "NBLLM_PROVIDER" else f"{source or 'the default provider'} {name!r}"
    enabled = [n for n in registry.names() if registry.settings(n).enabled]
    known = name.strip().lower() in registry.names()
    reason = "names a disabled provider" if known and not registry.settings(name.strip().lower()).enabled else \
        ("is not a known provider" if ":" not in name and "," not in name else f"cannot be used ({problem})")
    message = f"nbllm: {what} {reason}; using {AUTO!r}. Enabled choices: {', '.join([AUTO, *enabled])}."
    config_warning(scrub(message))
    return Selection(AUTO, None)


def use(provider: str, model: str | None = None, save: bool = False) -> Selection:
    """Make `provider` (and `model`) the kernel-wide default; observers are told.

    `provider` may be `provider:model`, an alias or a fallback chain (`"openai,embedded"`).
    Unknown or disabled names raise `ConfigurationError` and leave the default as it was.
    """
    global _current
    registry = get_registry()
    selection = selection_for(provider, model or None)
    with _lock:
        changed = selection != _current
        _current = selection
    if save:
        registry.save_default(selection.provider, selection.model)
    if changed:
        _observers.tell(selection)
    return selection


def observe(callback: Observer) -> Callable[[], None]:
    """Call `callback(selection)` on every change; returns a function that unsubscribes."""
    return _observers.add(callback)


def reset_default() -> None:
    """Forget the default (re-read from the environment next time); observers stay."""
    global _current
    with _lock:
        _current = None


class Conversation:
    """Message history for `--chat`: pydantic-ai messages, kept per kernel."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    def reset(self) -> None:
        self.messages = []

    def extend(self, new_messages: list[Any]) -> None:
        self.messages.extend(new_messages)

    def __len__(self) -> int:
        return len(self.messages)

    def turns(self) -> list[tuple[str, str]]:
        """(role, text) for each message: what a person reading the conversation wants."""
        out: list[tuple[str, str]] = []
        for message in self.messages:
            for part in getattr(message, "parts", []):
                kind = getattr(part, "part_kind", "")
                if kind == "user-prompt":  # text, or text and images (shown as placeholders)
                    from .parts import content_text

                    out.append(("user", content_text(part.content)))
                elif kind == "text":
                    out.append(("assistant", part.content))
        return out

    def __repr__(self) -> str:
        lines = [f"Conversation with {len(self.turns())} messages"]
        lines += [f"  {role}: {text if len(text) <= 80 else text[:79] + '…'}" for role, text in self.turns()]
        return "\n".join(lines)


_conversations: dict[str, Conversation] = {}


def conversation(name: str = "default") -> Conversation:
    """The named conversation (created on first use)."""
    with _lock:
        return _conversations.setdefault(name, Conversation())
