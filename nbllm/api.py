"""The provider-level Python API: models, health, enable/disable, the default.

Thin functions over the registry, session and bridge that every face (magics,
widgets, command line) calls; anything those faces do is one call here.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from . import bridge, routing, session
from .catalog import AUTO
from .config import config_warning
from .errors import ConfigurationError, ModelError
from .factory import build_model
from .health import ProviderHealth, probed
from .registry import StatusSummary, get_registry, has_registry
from .routing import Choice

if TYPE_CHECKING:
    import pandas as pd

    from . import listing
    from pydantic_ai.models import Model

__all__ = [
    "get_model", "get_model_async", "resolve", "check_all_providers", "check_provider", "health_check",
    "enable", "disable", "reinit", "status", "providers", "health_table", "models", "models_async",
    "add_provider", "remove_provider", "alias", "unalias", "aliases",
]


def get_model(provider: str | None = None, model: str | None = None) -> "Model":
    """A pydantic-ai model for `provider` (default: the kernel-wide default).

    Sync and without network calls to providers: `auto` resolves offline (a cloud
    key first, else the first local server by priority, not probed); use
    `get_model_async` to probe which local server answers. One exception: for
    `embedded`, get_model starts the local server if it is not running (a process
    and a model load, up to NBLLM_EMBEDDED_START_TIMEOUT), so the model works.
    """
    selection = session.current()
    choice = routing.choose_offline(provider or selection.provider, model or (None if provider else selection.model))
    spec, settings = get_registry().require(choice.provider)
    if spec.prepare:  # a provider nbllm runs itself (embedded) must be running for the model to work
        settings = bridge.run(get_registry().prepare(spec.name))
    return build_model(spec, settings, choice.model)


async def get_model_async(
    provider: str | None = None, test_connection: bool = False, auto_detect_model: bool = True, model: str | None = None
) -> "Model":
    """Like `get_model`, but `auto` probes local servers and local model ids are detected.

    `test_connection=True` raises `ModelError` (provider, URL, cause) when the
    provider does not answer.
    """
    choice = await resolve(provider, model, auto_detect_model=auto_detect_model, test_connection=test_connection)
    spec, settings = get_registry().require(choice.provider)
    settings = await bridge.run_async(get_registry().prepare(spec.name))
    return build_model(spec, settings, choice.model)


async def resolve(
    provider: str | None = None, model: str | None = None, auto_detect_model: bool = True, test_connection: bool = False
) -> Choice:
    """Which provider and model a call would use, and why.

    `test_connection=True`: a local (or self-hosted) server must answer a probe and a
    cloud provider must have a key, else `ModelError` says which and why.
    """
    selection = session.current()
    registry = get_registry()

    async def _test(name: str) -> None:
        spec, settings = registry.spec(name), registry.settings(name)
        if probed(spec, settings):
            if spec.prepare:  # a server nbllm runs (embedded): start it, as the call would
                await registry.prepare(name)
            h = (await routing.check([name]))[name]
            if not h.connected:
                raise ModelError(name, h.error or "not answering", url=h.base_url, hint=spec.install_hint)
        elif not settings.has_key:
            raise ModelError(name, "no API key configured", url=settings.base_url)

    async def _resolve() -> Choice:
        wanted = provider or selection.provider
        asked_model = model or (None if provider else selection.model)
        first = routing.resolve(wanted, asked_model).links[0]  # an alias, provider:model or a chain: its first link
        named = first.provider != AUTO
        if test_connection and named:  # probe first: the model detection then reuses this probe
            await _test(registry.require(first.provider)[0].name)
        choice = await routing.choose(wanted, asked_model, auto_detect_model)
        if test_connection and not named:
            await _test(choice.provider)
        return choice

    return await bridge.run_async(_resolve())


async def check_all_providers(timeout: float | None = None) -> dict[str, ProviderHealth]:
    """Probe every provider concurrently (about one health timeout in all)."""
    return await bridge.run_async(routing.check(None, timeout))


async def check_provider(name: str, timeout: float | None = None) -> ProviderHealth:
    """Probe one provider; never raises for one that is down."""
    spec = get_registry().spec(name)
    return (await bridge.run_async(routing.check([spec.name], timeout)))[spec.name]


def health_check(names: list[str] | None = None, timeout: float | None = None) -> dict[str, ProviderHealth]:
    """Sync `check_all_providers` (safe inside a running kernel)."""
    return bridge.run(routing.check(names, timeout))


def enable(name: str, save: bool = False) -> None:
    get_registry().enable(name, save=save)


def disable(name: str, save: bool = False) -> None:
    """Disable a provider; a default that no longer works without it (named directly, through an
    alias or as a chain with nothing else usable) falls back to auto, with one warning."""
    registry = get_registry()
    spec = registry.spec(name)
    registry.disable(spec.name, save=save)
    _recheck_default(spec.name, "disabled")


def reinit() -> None:
    """Re-read the environment, `.env` and the user config file; keep the default if still valid."""
    fresh = not has_registry()
    previous = session.current()  # creating the registry (if fresh) has just read everything
    registry = get_registry()
    if not fresh:
        registry.reinit()
    embedded = sys.modules.get("nbllm.embedded")
    if embedded is not None:  # a crashed embedded server may be tried again (e.g. after a rebuild)
        embedded.forget_crash()
    from . import fleet

    fleet.reset()  # servers taken out are given another chance, as the settings are
    try:
        session.use(previous.provider, previous.model)
        return
    except ConfigurationError as exc:
        problem = exc
    fallback = registry.global_settings.provider or AUTO
    try:
        session.use(fallback)
    except ConfigurationError:
        fallback = AUTO
        session.use(AUTO)
    config_warning(f"nbllm: the default {previous.provider!r} is no longer usable ({problem}); using {fallback!r}.")


def status(health: dict[str, ProviderHealth] | None = None) -> StatusSummary:
    """Counts: total, enabled, configured, available (available needs a health dict)."""
    return get_registry().summary(health)


def providers() -> list[str]:
    """The registered provider names, in catalog order."""
    return get_registry().names()


def health_table(timeout: float | None = None) -> "pd.DataFrame":
    """Probe every provider now (concurrently) and return the table, models included.

    A fleet (`{P}_BASE_URL` listing several servers) is its provider's row followed by one
    row per server (`└ vllm 1`, …). Safe inside a running kernel; costs about one health
    timeout in all.
    """
    from . import tables

    return tables.health_frame(health_check(timeout=timeout), tables.HEALTH_TABLE_COLUMNS)


async def models_async(provider: str | None = None, timeout: float | None = None) -> "pd.DataFrame":
    """`models` for `await` in a notebook (the request runs on nbllm's loop)."""
    from . import listing

    return _models_frame(await bridge.run_async(listing.list_models(provider, timeout)))


def models(provider: str | None = None, timeout: float | None = None) -> "pd.DataFrame":
    """The models `provider` lists (None: the kernel-wide default), one row each.

    Columns: provider, server, model, default (the model a call would use), loaded, owned_by,
    context_length, size (bytes), parameter_size, quantization — None where the endpoint does
    not say. Local servers are asked their own way (LM Studio, Ollama, llama.cpp, `/v1/models`);
    a cloud provider's list is a request with its key, made only here (status and health never
    do). A fleet lists every server (`server` column); those that did not answer are in
    `.attrs["failed"]`. A failure is one `NbllmError` line naming the provider, URL and fix.
    """
    from . import listing

    return _models_frame(bridge.run(listing.list_models(provider, timeout)))


def _models_frame(found: "listing.Listing") -> "pd.DataFrame":
    import pandas as pd

    from .listing import COLUMNS

    frame = pd.DataFrame(found.rows, columns=COLUMNS)
    frame.attrs["failed"] = dict(found.failed)
    return frame


# ---- the user's own endpoints and aliases (saved in nbllm.toml: see nbllm.endpoints) ----

def add_provider(name: str, base_url: str, key_env: str | None = None, kind: str = "local",
                 protocol: str = "openai", model: str | None = None, label: str | None = None,
                 save: bool = True, price_input: float | None = None, price_output: float | None = None) -> None:
    """Add your own provider: an OpenAI- or Anthropic-compatible server at `base_url` (a comma
    list is a fleet). It reads `{NAME}_*` variables like the built-in ones (`{NAME}_API_KEY`,
    and `key_env` if given) and shows in status, health and the panel.

    `kind="local"` is probed and its model detected; `kind="cloud"` needs a key and a `model`.
    `save=True` writes it to the endpoints file (`nbllm.toml` beside the user config file, or
    the working directory's if that one already holds it — where `key_env` is not read, so it
    is refused there); else it lasts for this process (`reinit()` included). `key_env` naming
    another provider's key (`OPENAI_API_KEY`) sends that key to this endpoint. `price_input` /
    `price_output` declare its prices (USD per million tokens; like `{NAME}_PRICE_INPUT`), so its
    answers, estimates and budgets have a cost (a local endpoint otherwise costs 0, a cloud one
    is unknown unless genai-prices knows its model).
    """
    get_registry().add_endpoint(name, base_url, key_env=key_env, kind=kind, protocol=protocol, model=model,
                                label=label, save=save, price_input=price_input, price_output=price_output)


def remove_provider(name: str, save: bool = True) -> list[str]:
    """Remove one of your own providers (from every endpoints file holding it, when `save`);
    returns those files. A built-in provider cannot be removed: `disable` it. A default that no
    longer works without it becomes `auto`; with `save`, a saved default naming it is cleared too."""
    registry = get_registry()
    removed = registry.remove_endpoint(name, save=save)
    _default_left(name, save)
    return [str(path) for path in removed]


def alias(name: str, target: str, on: str = "transient", save: bool = True) -> None:
    """Let `name` stand for `target` anywhere a provider is named: a provider, `provider:model`,
    `auto`, another alias or a chain (`"openai,embedded"`). `on="any"` makes a chain fall back
    on every error, not only connection failures, timeouts, 429 and 5xx. Saved in the
    endpoints file when `save`."""
    get_registry().set_alias(name, target, on=on, save=save)


def unalias(name: str, save: bool = True) -> list[str]:
    """Forget alias `name` (and remove it from the endpoints files, when `save`); returns those files.
    An alias that other aliases name is not removed (the error names them). A default that no
    longer works becomes `auto`; with `save`, a saved default naming it is cleared too."""
    removed = get_registry().remove_alias(name, save=save)
    _default_left(name, save)
    return [str(path) for path in removed]


def aliases() -> dict[str, str]:
    """Every alias and what it stands for (`{"fast": "groq:llama-3.1-8b-instant"}`)."""
    return {name: a.target for name, a in sorted(get_registry().aliases.items())}


def _default_left(name: str, save: bool) -> None:
    """After `name` was removed: a saved removal clears a saved default naming it (else every later
    process warns), and the kernel-wide default is checked again (`_recheck_default`)."""
    if save:
        get_registry().forget_saved_default((name or "").strip().lower())
    _recheck_default((name or "").strip().lower(), "removed")


def _recheck_default(gone: str, what: str) -> None:
    """After a removal or a disable: if the kernel-wide default no longer resolves — also when it names
    what went only through an alias (`best` → `fast` → a removed endpoint) — it becomes `auto`, with
    one warning; else every later ask would fail with the same error."""
    current = session.current()
    if current.provider == AUTO:
        return
    try:
        session.selection_for(current.provider, current.model)
    except ConfigurationError as exc:
        from .catalog import parse_chain

        named = any(link.provider == gone for link in parse_chain(current.provider))
        why = f"{gone!r} was {what}" if named else str(exc).split(". Valid providers:")[0].rstrip(".")
        session.use(AUTO)
        config_warning(f"nbllm: the default {current.provider!r} no longer works ({why}); using {AUTO!r}. "
                       "Choose another with nbllm.use(NAME) or %llm_providers --use NAME.")
