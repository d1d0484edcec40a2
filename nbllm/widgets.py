"""The provider panel: pick the kernel-wide default with a click, see what answers.

`panel()` builds plain ipywidgets 8 widgets (no front-end build of our own, so it
renders in JupyterLab, Notebook 7 and VS Code). The panel holds no logic: choosing
calls `session.use()`, and it follows `session.observe()`, so a magic or
`nbllm.use()` in another cell moves every panel. Health checks run on nbllm's
background loop (`ProviderRegistry.check`, bounded per provider); their results are
applied from that thread (ipywidgets sends trait changes through the kernel's comm
from any thread), so neither the kernel nor the page waits for a slow provider.

What the page sends (a pick, Refresh) is handled by the kernel's main shell, in
turn with cells. ipykernel 7 would otherwise route a widget's messages to the
subshell JupyterLab opens for widgets as soon as the widget has sent anything while
handling one of them, and run them there while a cell runs: the busy/idle of that
handling is the kernel status JupyterLab shows, so the status bar read "Idle"
during the running cell (see `_handle_on_main_shell`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import html
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from . import bridge, call_events, session
from .catalog import AUTO, all_specs, parse_chain
from .errors import NbllmError, display_url, scrub
from .health import NOT_STARTED, ProviderHealth, known_without_probe, probed, unfinished
from .registry import get_registry
from .session import Selection
from . import tables
from .tables import health_rows

if TYPE_CHECKING:
    from .registry import ProviderRegistry

__all__ = ["ProviderPanel", "panel"]

log = logging.getLogger("nbllm")

CHECKING = "checking…"
LISTING = "listing models…"
DEFAULT_MODEL = ""
"""Model selector value meaning "the provider's own default" (configured, or detected at call time)."""

_TABLE_HEADINGS = [
    ("provider", "provider"), ("status", "status"), ("model", "model"), ("latency_ms", "ms"),
    ("base_url", "base URL"), ("error", "error"), ("note", "note"),
]
"""The panel's columns: the status word already says disabled or down, so no enabled/connected
columns take the width the error (what to do) needs."""
PANEL_MARGIN = 2.0
"""Seconds the panel waits for a provider beyond the health timeout before marking it timed out."""
MIN_CHECKING_SECONDS = 0.4
"""Refresh shows "checking…" at least this long: a check that answers at once would otherwise
flash by unseen, and the click would look ignored."""
RECHECK_SECONDS = 10.0
"""The shortest time between two looks at one provider that calls ask for (see `_on_call_ended`)."""


def panel() -> "ProviderPanel":
    """A new provider panel; display it (it is its own repr in a notebook)."""
    return ProviderPanel()


class ProviderPanel(widgets.VBox):
    """Provider and model selectors, Refresh, the health table and the current default.

    The provider selector offers every catalog entry (built-ins, presets, plug-ins, the
    user's own endpoints) and the aliases. The model selector lists what a local server's
    health check found; a cloud provider's models come from "list models" (one request
    with its key, made only on that click — never by a check).

    Every panel in a kernel shows the same default: a change made anywhere goes
    through `nbllm.use()` and comes back to each panel through its observer.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._lock = threading.RLock()
        self._syncing = False  # True while the panel itself moves its selectors
        self._health: dict[str, ProviderHealth] = {}
        self._generation = 0
        self._future: concurrent.futures.Future | None = None
        self._checked = threading.Event()
        self._note = ""  # why the last choice was refused, shown in the status line
        self._listed: dict[str, list[str]] = {}  # cloud provider → the models its list endpoint named
        self._list_future: concurrent.futures.Future | None = None
        self._models_listed = threading.Event()
        self._models_listed.set()
        self._started = 0.0  # when the latest Refresh began (time.monotonic)
        self._rechecking: set[str] = set()  # providers re-checked because a call told something new
        self._rechecked_at: dict[str, float] = {}
        self._rows_updated = threading.Event()
        self._rows_updated.set()

        self.provider_select = widgets.Dropdown(description="Provider", options=[(AUTO, AUTO)], value=AUTO)
        self.model_select = widgets.Dropdown(description="Model", options=[("provider default", DEFAULT_MODEL)])
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh", tooltip="Check every provider again")
        self.list_button = widgets.Button(
            description="list models", icon="list", disabled=True,
            tooltip="Ask the chosen cloud provider which models it offers (one request with its key)")
        self.models_note = widgets.HTML()
        self.check_label = widgets.HTML()
        self.default_line = widgets.HTML()
        self.table = widgets.HTML()
        self.provider_select.layout.width = "300px"
        self.model_select.layout.width = "280px"
        for w in (self.provider_select, self.model_select):
            w.style.description_width = "60px"
        self.refresh_button.layout.width = "110px"
        self.list_button.layout.width = "120px"
        # One line of controls (about 810 px, a notebook's width at 1280 px with the file browser open);
        # narrower, whole controls move to a second line — never squeezed to "…".
        controls = widgets.HBox([self.provider_select, self.model_select, self.list_button, self.refresh_button],
                                layout=widgets.Layout(flex_flow="row wrap", align_items="center"))
        for w in controls.children:
            w.layout.flex = "0 0 auto"
        controls.add_class("nbllm-controls")
        self.check_label.add_class("nbllm-summary")
        # The check's one-line summary sits above the table it summarises (beside Refresh it wrapped).
        super().__init__(children=[controls, self.models_note, self.default_line, self.check_label, self.table],
                         **kwargs)
        for widget in _walk(self):
            _handle_on_main_shell(widget)
        self.add_class("nbllm-panel")

        with self._syncing_widgets():
            self._fill_providers()
            self._show_selection(session.current())
        self._render_table()

        self.provider_select.observe(self._on_provider_chosen, names="value")
        self.model_select.observe(self._on_model_chosen, names="value")
        self.refresh_button.on_click(lambda _button: self.refresh())
        self.list_button.on_click(lambda _button: self.list_models())
        self._unsubscribe: Callable[[], None] | None = _weakly(self, session.observe, "_on_selection")
        self._stop_listening: Callable[[], None] | None = _weakly(self, call_events.listen, "_on_call_ended")
        self.refresh()

    # ---- public -------------------------------------------------------------
    def refresh(self) -> concurrent.futures.Future:
        """Check every provider on nbllm's loop; the panel updates when it completes."""
        registry = get_registry()
        timeout = registry.health_timeout
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._checked.clear()
            if self._future is not None and not self._future.done():
                self._future.cancel()
            self._started = time.monotonic()
            self._show_checking(True)
            with self._syncing_widgets():
                self._fill_providers(checking=True)
            self._render_table(checking=True)
        # Each provider on its own bound: one stuck check gets a "timed out" row, the others their results.
        check = registry.check(None, timeout, bound=timeout + PANEL_MARGIN)
        future = asyncio.run_coroutine_threadsafe(check, bridge.get_loop())
        self._future = future
        future.add_done_callback(lambda f: self._on_checked(f, generation, timeout))
        return future

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the latest check has been applied to the widgets (for scripts and tests)."""
        return self._checked.wait(timeout)

    def wait_rows(self, timeout: float | None = None) -> bool:
        """Block until the rows a finished call made stale have been checked again (for tests)."""
        return self._rows_updated.wait(timeout)

    def list_models(self) -> concurrent.futures.Future | None:
        """Ask the chosen cloud provider for its models on nbllm's loop (the "list models" button).

        Local servers need no such request (their health check already listed them): None.
        The model selector fills when the answer comes; a failure is one line under the selectors.
        """
        from . import listing

        with self._lock:
            provider = self.provider_select.value
            if not self._listable(provider) or (self._list_future is not None and not self._list_future.done()):
                return None
            self._models_listed.clear()
            self.list_button.disabled = True
            self.models_note.value = _small(LISTING)
            future = asyncio.run_coroutine_threadsafe(listing.list_models(provider), bridge.get_loop())
            self._list_future = future
        future.add_done_callback(lambda f: self._on_listed(f, provider))
        return future

    def wait_models(self, timeout: float | None = None) -> bool:
        """Block until the latest "list models" answer has been applied (for scripts and tests)."""
        return self._models_listed.wait(timeout)

    @property
    def health(self) -> dict[str, ProviderHealth]:
        """The latest check's results (empty until the first completes)."""
        return dict(self._health)

    def close(self) -> None:
        """Stop following the default, drop any check in flight and close every child widget."""
        unsubscribe = getattr(self, "_unsubscribe", None)
        if unsubscribe is not None:
            unsubscribe()
            self._unsubscribe = None
        stop_listening = getattr(self, "_stop_listening", None)
        if stop_listening is not None:
            stop_listening()
            self._stop_listening = None
        for future in (getattr(self, "_future", None), getattr(self, "_list_future", None)):
            if future is not None and not future.done():
                future.cancel()
        for child in list(_walk(self)):
            if child is not self:
                child.close()
        super().close()

    # ---- the selectors --------------------------------------------------------
    def _on_provider_chosen(self, change: dict[str, Any]) -> None:
        with self._lock:
            if self._syncing or change["new"] is None:
                return
            if self._list_future is None or self._list_future.done():
                self.models_note.value = ""  # a listing's outcome belongs to the provider it was for
            with self._syncing_widgets():
                self._fill_models(change["new"], None)
            self._choose(change["new"], None)

    def _on_model_chosen(self, change: dict[str, Any]) -> None:
        with self._lock:
            if self._syncing or change["new"] is None:
                return
            self._choose(self.provider_select.value, change["new"] or None)

    def _choose(self, provider: str, model: str | None) -> None:
        """Make the user's pick the kernel-wide default; a refused pick puts the selectors back."""
        note = ""
        try:
            session.use(provider, model)
        except NbllmError as exc:
            note = str(exc)
        # use() tells observers only on a change; show the outcome (and any refusal) either way.
        self._on_selection(session.current(), note)

    def _on_selection(self, selection: Selection, note: str = "") -> None:
        """Observer of the kernel-wide default (any thread): move the selectors to it."""
        with self._lock:
            self._note = note
            with self._syncing_widgets():
                self._show_selection(selection)

    def _show_selection(self, selection: Selection) -> None:
        if selection.provider not in self._provider_values():  # (a chain or alias named elsewhere is added there)
            self._fill_providers()
        self.provider_select.value = selection.provider
        self._fill_models(selection.provider, selection.model)
        self._render_default(selection)

    def _provider_values(self) -> list[str]:
        return [value for _label, value in self.provider_select.options]

    def _fill_providers(self, checking: bool = False) -> None:
        registry = get_registry()
        options = [("auto — first that answers", AUTO)]
        for spec in all_specs():  # built-ins, presets, plug-ins and the user's own endpoints alike
            status = _status(registry, spec.name, self._health.get(spec.name), checking)
            options.append((f"{spec.label} — {status}", spec.name))
        names = set(registry.names())
        for name, alias in sorted(registry.aliases.items()):
            if name not in names:
                options.append((self._alias_label(registry, name, alias, checking), name))
        current = session.current().provider
        if current not in [value for _label, value in options]:
            options.append((current, current))
        _set_options(self.provider_select, options)

    def _alias_label(self, registry: "ProviderRegistry", name: str, alias: Any, checking: bool) -> str:
        """`fast → groq:llama-3.1-8b-instant — available`: what it names and how its first provider is."""
        target = alias.target
        try:
            first = parse_chain(target)[0].provider
        except NbllmError:
            return f"{name} → {target} — not usable"
        if first not in registry.names():
            return f"{name} → {target}"
        return f"{name} → {target} — {_status(registry, first, self._health.get(first), checking)}"

    def _fill_models(self, provider: str, model: str | None) -> None:
        """Models the chosen provider offers: what a local server's health check found, what a
        cloud provider's list answered ("list models"), else the configured one."""
        health = self._health.get(provider)
        options = [(_default_model_label(provider, health), DEFAULT_MODEL)]
        found = self._listed.get(provider) or (health.models if health and provider != AUTO else [])
        for name in found:
            options.append((name, name))
        if model and model not in [value for _label, value in options]:
            options.append((model, model))
        _set_options(self.model_select, options, model or DEFAULT_MODEL)
        listing = self._list_future is not None and not self._list_future.done()
        self.list_button.disabled = listing or not self._listable(provider)

    def _listable(self, provider: str) -> bool:
        """Whether "list models" applies: a cloud provider (a local server's health check already listed)."""
        registry = get_registry()
        if provider not in registry.names():
            return False
        spec, settings = registry.spec(provider), registry.settings(provider)
        return settings.enabled and not probed(spec, settings)

    def _on_listed(self, future: concurrent.futures.Future, provider: str) -> None:
        """Done-callback on nbllm's loop thread: fill the model selector, or say in one line what failed."""
        with self._lock:
            try:
                if future.cancelled():
                    self.models_note.value = ""
                    return
                error = future.exception()
                if error is None:
                    names = future.result().names
                    self._listed[provider] = names
                    self.models_note.value = _small(_escape(f"{provider}: {len(names)} models listed"))
                else:
                    self.models_note.value = _small("⚠ " + _escape(_one_line(error)))
                if self.provider_select.value == provider:
                    with self._syncing_widgets():
                        self._fill_models(provider, session.current().model
                                          if session.current().provider == provider else None)
            finally:
                self.list_button.disabled = not self._listable(self.provider_select.value)
                self._models_listed.set()

    # ---- the background check -------------------------------------------------
    def _on_checked(self, future: concurrent.futures.Future, generation: int, timeout: float) -> None:
        """Done-callback on nbllm's loop thread: apply the results (after "checking…" has shown
        for MIN_CHECKING_SECONDS) unless a newer check started."""
        wait = MIN_CHECKING_SECONDS - (time.monotonic() - self._started)
        if wait > 0 and not future.cancelled():
            timer = threading.Timer(wait, self._apply_check, (future, generation, timeout))
            timer.daemon = True
            timer.start()
        else:
            self._apply_check(future, generation, timeout)

    def _apply_check(self, future: concurrent.futures.Future, generation: int, timeout: float) -> None:
        with self._lock:
            if generation != self._generation or future.cancelled():
                return
            error = future.exception()
            stamp = time.strftime("%H:%M:%S")
            if error is None:
                self._health = future.result()
                self.check_label.value = _small(_summary(self._health, stamp))
            else:
                if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
                    self.check_label.value = _small(f"timed out after {timeout:g} s ({stamp})")
                else:
                    self.check_label.value = _small(_escape(f"check failed: {type(error).__name__}: {error}"))
                # Every row gets an outcome: none is left "checking…" until the next Refresh.
                registry = get_registry()
                self._health = {name: unfinished(registry.spec(name), registry.settings(name), timeout, error)
                                for name in registry.names()}
            try:
                with self._syncing_widgets():
                    self._fill_providers()
                    self._show_selection(session.current())
                self._render_table()
            finally:
                self._show_checking(False)
                self._checked.set()

    def _show_checking(self, checking: bool) -> None:
        """Refresh itself says a check runs: "Checking…" with a spinning icon, and disabled."""
        with self.refresh_button.hold_sync():
            self.refresh_button.disabled = checking
            self.refresh_button.description = "Checking…" if checking else "Refresh"
            self.refresh_button.icon = "spinner spin" if checking else "refresh"
        if checking:
            self.check_label.value = _small(CHECKING)

    # ---- what calls tell --------------------------------------------------------
    def _on_call_ended(self, answer: Any) -> None:
        """Listener of every finished call (on the thread that ended it; returns at once): a call
        that answered from a provider whose row says otherwise (the embedded model has started, a
        server is back), or failed on one shown available, has that one row checked again."""
        provider = getattr(answer, "provider", None)
        if str(getattr(answer, "reason", "") or "").startswith("replayed"):
            return  # the cache answered: nothing was learnt about the provider
        with self._lock:
            health = self._health.get(provider) if isinstance(provider, str) else None
            refreshing = self._future is not None and not self._future.done()
            if health is None or refreshing or provider in self._rechecking:
                return
            failed = bool(getattr(answer, "error", None))
            # An answer where the row says down or "starts on first use"; a failure where it says available.
            # (A fleet's row always has a note: its calls change nothing shown.) At most one look per
            # provider every RECHECK_SECONDS: a map failing on a rate limit does not probe it per row.
            if not (health.available and failed or not failed and (not health.available or health.note == NOT_STARTED)):
                return
            now = time.monotonic()
            if now - self._rechecked_at.get(provider, -RECHECK_SECONDS) < RECHECK_SECONDS:
                return
            self._rechecked_at[provider] = now
            self._rechecking.add(provider)
            self._rows_updated.clear()
            generation = self._generation
        registry = get_registry()
        timeout = registry.health_timeout
        check = registry.check([provider], timeout, bound=timeout + PANEL_MARGIN)
        future = asyncio.run_coroutine_threadsafe(check, bridge.get_loop())
        future.add_done_callback(lambda f: self._on_rechecked(f, provider, generation))

    def _on_rechecked(self, future: concurrent.futures.Future, provider: str, generation: int) -> None:
        """Apply one provider's new row unless a Refresh started since (its rows are newer)."""
        with self._lock:
            try:
                if generation != self._generation or future.cancelled() or future.exception() is not None:
                    return
                self._health[provider] = future.result()[provider]
                self.check_label.value = _small(_summary(self._health, time.strftime("%H:%M:%S")))
                with self._syncing_widgets():
                    self._fill_providers()
                    self._show_selection(session.current())
                self._render_table()
            finally:
                self._rechecking.discard(provider)
                if not self._rechecking:
                    self._rows_updated.set()

    # ---- rendering ------------------------------------------------------------
    def _render_default(self, selection: Selection) -> None:
        self.default_line.value = _default_html(selection, self._health.get(selection.provider), self._note)

    def _render_table(self, checking: bool = False) -> None:
        registry = get_registry()
        if self._health:
            rows = health_rows({n: self._health[n] for n in registry.names() if n in self._health})
        else:
            rows = [_pending_row(registry, spec.name) for spec in all_specs()]
        self.table.value = _table_html(rows, checking)

    def _syncing_widgets(self) -> "_Syncing":
        return _Syncing(self)


class _Syncing:
    """Context: the panel moves its own selectors, so their observers must not call use()."""

    def __init__(self, owner: ProviderPanel):
        self.owner = owner

    def __enter__(self) -> None:
        self.previous = self.owner._syncing
        self.owner._syncing = True

    def __exit__(self, *exc: Any) -> None:
        self.owner._syncing = self.previous


def _weakly(owner: ProviderPanel, subscribe: Callable[[Callable[[Any], None]], Callable[[], None]],
            method: str) -> Callable[[], None]:
    """`subscribe(callback)` with a callback that calls `owner.<method>(value)` without keeping the panel
    alive: it holds a weak reference and drops itself once the panel is gone. Returns the unsubscriber
    (`close()` calls it at once)."""
    ref = weakref.ref(owner)
    stop: list[Callable[[], None]] = []

    def callback(value: Any) -> None:
        target = ref()
        if target is None:
            stop[0]()
        else:
            getattr(target, method)(value)

    stop.append(subscribe(callback))
    return stop[0]


def _summary(health: dict[str, ProviderHealth], stamp: str) -> str:
    """The header's one line: `3 of 17 available · checked 08:39:19`."""
    available = sum(1 for h in health.values() if h.available)
    return f"<span style='white-space:nowrap'>{available} of {len(health)} available · checked {stamp}</span>"


def _handle_on_main_shell(widget: widgets.Widget) -> None:
    """Have the kernel's main shell handle what the page sends to `widget` (and its layout and style).

    ipykernel 7 sends a comm message from the page to the subshell named in the header
    of the message its comm last replied under; JupyterLab names its widget subshell in
    every widget message. So once the panel has updated its widgets while handling one
    (a pick, Refresh — or its loop thread applying a check that Refresh started, under
    the same parent), the next pick runs in that subshell at the same time as a cell,
    and the busy/idle it publishes becomes the status JupyterLab shows for the whole
    kernel: "Idle" while the cell still runs. The main shell handles it after the cell,
    like any kernel without subshells, and choosing never races a running cell.
    """
    for w in (widget, getattr(widget, "layout", None), getattr(widget, "style", None)):
        comm = getattr(w, "comm", None)
        if comm is not None and hasattr(comm, "_reply_subshell_for"):  # ipykernel >= 7.4's comm routing
            comm._reply_subshell_for = _main_shell


def _main_shell(data: Any, default: str | None) -> None:
    """Comm routing hook: None is the kernel's main shell."""
    return None


def _default_html(selection: Selection, health: ProviderHealth | None, note: str) -> str:
    """The line under the selectors: the kernel-wide default, and why it may not answer."""
    model = selection.model or "the provider's default"
    text = (f"Kernel-wide default: <b class='nbllm-current'>{_escape(selection.provider)}</b>"
            f" · model: <code>{_escape(model)}</code>"
            " — used by <code>%%llm</code> without <code>-p</code> and <code>nbllm.ask()</code>")
    if health is not None and not health.available:
        reason = _escape(scrub(health.error or health.status))
        text += (f"<br>⚠ <b>{_escape(selection.provider)} is {health.status}</b>: {reason}."
                 " Calls will fail until it answers.")
    if note:
        text += f"<br>⚠ {_escape(scrub(note))}"
    return f'<div class="nbllm-default">{text}</div>'


def _table_html(rows: list[dict[str, Any]], checking: bool) -> str:
    """The health table, drawn by the renderer every face uses (a "checking…" caption while a check runs)."""
    clean = [{k: scrub(v) if isinstance(v, str) else v for k, v in row.items()} for row in rows]
    columns = [key for key, _label in _TABLE_HEADINGS]
    table = tables.table(clean, columns, dict(_TABLE_HEADINGS))
    body = tables.to_html(table, CHECKING if checking else None, table_class="nbllm-health")
    return f"<div style='overflow-x:auto'>{body}</div>"


def _set_options(dropdown: widgets.Dropdown, options: list[tuple[str, str]], value: str | None = None) -> None:
    """Replace the options keeping the selection (ipywidgets resets it to the first option)."""
    keep = dropdown.value if value is None else value
    values = [v for _label, v in options]
    with dropdown.hold_sync():
        if list(dropdown.options) != options:
            dropdown.options = options
        dropdown.value = keep if keep in values else values[0]


def _status(registry: "ProviderRegistry", name: str, health: ProviderHealth | None, checking: bool) -> str:
    """`ProviderHealth.status`, or what is known without a probe before the first check answers."""
    if health is None:
        known = known_without_probe(registry.spec(name), registry.settings(name))
        return known.status if known is not None else CHECKING
    return health.status + (f" ({CHECKING})" if checking else "")


def _one_line(error: BaseException) -> str:
    """A failure as one scrubbed line: nbllm's own message, else the exception's type and text."""
    text = str(error) if isinstance(error, NbllmError) else f"listing models failed: {type(error).__name__}: {error}"
    return scrub(" ".join(text.split()))


def _default_model_label(provider: str, health: ProviderHealth | None) -> str:
    if provider == AUTO:
        return "the chosen provider's default"
    registry = get_registry()
    if provider not in registry.names():  # an alias (or a chain named elsewhere): what it names decides
        alias = registry.aliases.get(provider)
        return f"as {alias.target} says" if alias is not None else "as named"
    settings = registry.settings(provider)
    if health is not None and health.model_detected and settings.model_is_default:
        return f"{health.model_id} (loaded)"
    if health is not None and health.note and health.model_id and settings.model_is_default:
        return f"{health.model_id} ({health.note})"  # the embedded model: named before its server starts
    if registry.spec(provider).kind == "local" and settings.model_is_default:
        return "detect at call time"
    return f"{settings.model} (configured)"


def _pending_row(registry: "ProviderRegistry", name: str) -> dict[str, Any]:
    """A row before the first check answers: what is known without a probe, else 'checking…'."""
    spec, settings = registry.spec(name), registry.settings(name)
    known = known_without_probe(spec, settings)
    if known is not None:
        return health_rows({name: known})[0]
    return {"provider": name, "status": CHECKING, "enabled": settings.enabled, "connected": "—",
            "model": settings.model, "latency_ms": None, "base_url": display_url(settings.base_url), "error": "",
            "note": ""}


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


def _small(text: str) -> str:
    return f"<span style='opacity:0.75'>{text}</span>"


def _walk(widget: widgets.Widget) -> Iterator[widgets.Widget]:
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _walk(child)
