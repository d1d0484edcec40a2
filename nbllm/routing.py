"""What a provider name means right now: a name resolved to a `Route`, each link to a `Choice`.

A name is a provider (`groq`), a provider and model (`ollama:qwen3:8b`: the first colon
splits), an alias (`fast`), `auto`, or a fallback chain of any of these (`openai,embedded`).
`resolve` expands it offline into the links a call tries in order (`Route`); `choose`
turns one link into a provider and model, probing local servers for `auto`.

`auto` is OpenAI when its key is set, else the first local server that answers
(LM Studio, Ollama, llama.cpp, vLLM… probed concurrently, chosen by priority), then
another cloud key, then the embedded model. A local server's model is detected from
what it lists. Both answers are remembered for `DETECT_TTL` seconds, because a probe
costs a round trip per call otherwise; a failed call (`invalidate`) or any change of
settings (the registry's generation) forgets them.

Why a module of its own: the registry holds settings and does not choose; this is the
one place that chooses, so every call, `map`, `compare`, `get_model` and `--test` get
the same answer for the same name.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import NoReturn

from . import catalog
from .catalog import AUTO, Link, ProviderSpec
from .errors import ConfigurationError
from .health import ProviderHealth, probed
from .registry import ProviderRegistry, get_registry

__all__ = [
    "Choice", "Route", "resolve", "choose", "choose_offline", "detected_model", "invalidate", "check", "mark_down",
    "known_down", "alias_problem", "DETECT_TTL", "DOWN_TTL",
]

log = logging.getLogger("nbllm")

DETECT_TTL = 60.0
"""Seconds a local server's detected model (and `auto`'s pick) is trusted before it is probed again."""

DOWN_TTL = 30.0
"""Seconds a provider found down (a probe, or a call nothing answered) is skipped by a fallback chain."""

_MAX_ALIAS_DEPTH = 8


@dataclass(frozen=True)
class Route:
    """A name resolved without the network: the links a call tries, in order (aliases expanded,
    duplicates dropped), and the ones left out before trying (disabled, no key) with why."""

    name: str
    """As written (`fast`, `openai,embedded`), models kept."""
    links: tuple[Link, ...]
    any_error: tuple[bool, ...] = ()
    """Per link: True when an alias with `on="any"` brought it in, so any failure of it moves on;
    else only failures another provider may not share (`ModelError.moves_on`)."""
    skipped: tuple[tuple[str, str], ...] = field(default=())
    expanded: str = ""
    """Every link as expanded, before any was skipped: what the replay cache keys a chain on."""

    @property
    def chain(self) -> bool:
        """Whether another link may answer when one fails."""
        return len(self.links) > 1

    def moves_on_any_error(self, link: Link) -> bool:
        return bool(self.any_error) and self.any_error[self.links.index(link)]


def _unknown(registry: ProviderRegistry, name: str, where: str = "") -> NoReturn:
    import difflib

    aliases = sorted(registry.aliases)
    choices = [*registry.names(), AUTO, *aliases]
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.75)
    guess = f" Did you mean {close[0]!r}?" if close else ""
    valid = ", ".join([*registry.names(), AUTO])
    extra = f"; aliases: {', '.join(aliases)}" if aliases else ""
    problems = " (nbllm.toml had problems: see its warning or --list)" if registry.endpoint_problems else ""
    raise ConfigurationError(f"Invalid LLM provider {name!r}{where}.{guess} Valid providers: {valid}{extra}"
                             f"{problems}.")


def _expand(registry: ProviderRegistry, links: tuple[Link, ...], seen: tuple[str, ...] = (),
            any_error: bool = False) -> list[tuple[Link, bool]]:
    """Aliases replaced by what they name (recursively), each link with whether any error moves on
    from it (its alias said `on="any"`); unknown names are one error listing valid ones."""
    out: list[tuple[Link, bool]] = []
    for link in links:
        alias = registry.aliases.get(link.provider)
        if alias is None:
            if link.provider != AUTO and link.provider not in registry.names():
                _unknown(registry, link.provider, f" (in alias {seen[-1]!r})" if seen else "")
            out.append((link, any_error))
            continue
        if link.provider in seen or len(seen) >= _MAX_ALIAS_DEPTH:
            raise ConfigurationError(f"Alias {link.provider!r} refers to itself ({' → '.join([*seen, link.provider])}): "
                                     f"change it with nbllm.alias({link.provider!r}, ...).")
        inner = _expand(registry, catalog.parse_chain(alias.target), (*seen, link.provider),
                        any_error or alias.on == "any")
        if link.model:  # `fast:other-model`: the alias's provider with another model
            if len(inner) > 1:
                raise ConfigurationError(f"{link}: alias {link.provider!r} is a chain ({alias.target}); "
                                         "a model can only follow a single provider.")
            inner = [(Link(inner[0][0].provider, link.model), inner[0][1])]
        out.extend(inner)
    return out


def _unusable(registry: ProviderRegistry, link: Link) -> str | None:
    """Why a link cannot answer, when that is known offline (disabled, no key, no base URL); else None."""
    if link.provider == AUTO:
        return None
    spec, settings = registry.spec(link.provider), registry.settings(link.provider)
    if not settings.enabled:
        return "disabled"
    from .health import known_without_probe

    known = known_without_probe(spec, settings)
    if known is not None and not known.configured:
        return known.error or "not configured"
    return None


def resolve(name: str | None, model: str | None = None, check_enabled: bool = True) -> Route:
    """What `name` (None: `auto`) asks for, as the links to try; nothing is sent.

    One provider named directly that is disabled is an error, as it always was. In a
    chain, or behind an alias, links that cannot answer (disabled, no key, no base URL)
    are skipped (`Route.skipped`), and only nothing usable left is an error — one line,
    naming the alias. `model` applies to the first link. `check_enabled=False` leaves a
    disabled single provider for the call itself to report (`compare`: a row saying so).
    """
    registry = _registry()
    text = (name or AUTO).strip() or AUTO
    spelled_links = catalog.parse_chain(text)
    expanded: dict[Link, bool] = {}
    for link, any_error in _expand(registry, spelled_links):
        expanded.setdefault(link, any_error)  # a repeat is tried once, where it first comes
    links = list(expanded.items())
    if model:
        links[0] = (Link(links[0][0].provider, model), links[0][1])
    spelled = ",".join(str(link) for link in spelled_links)
    everything = ",".join(str(link) for link, _ in links)
    via_alias = any(link.provider in registry.aliases for link in spelled_links)
    if len(links) == 1 and not via_alias:
        if links[0][0].provider != AUTO and check_enabled:
            registry.require(links[0][0].provider)  # disabled: the error it has always been
        return Route(spelled, (links[0][0],), (links[0][1],), expanded=everything)
    usable, skipped = [], []
    for link, any_error in links:
        why = _unusable(registry, link)
        if why is None:
            usable.append((link, any_error))
        else:
            skipped.append((str(link), why))
    if not usable:
        reasons = "; ".join(f"{link}: {why}" for link, why in skipped)
        if via_alias and len(spelled_links) == 1:
            raise ConfigurationError(f"alias {text.lower()!r} points at nothing usable ({reasons}).")
        raise ConfigurationError(f"{text!r} points at nothing usable ({reasons}). {catalog.NOTHING_USABLE_ADVICE}")
    return Route(spelled, tuple(link for link, _ in usable), tuple(flag for _, flag in usable), tuple(skipped),
                 everything)


def alias_problem(name: str) -> str | None:
    """Why alias `name` cannot answer, as far as is known offline (what it names is unknown,
    disabled or has no key), or None; for status and `--alias`."""
    if name not in _registry().aliases:
        return None
    try:
        resolve(name)
    except ConfigurationError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class Choice:
    """A resolved provider + model, with the reason (what `auto` says it picked)."""

    provider: str
    model: str
    reason: str = ""


class _Memory:
    """Detected models and `auto`'s last pick, valid for one generation of the registry's settings."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.detected: dict[str, tuple[str | None, float]] = {}
        self.auto: tuple[Choice, float] | None = None
        self.down: dict[str, tuple[str, float]] = {}
        """Provider → (why, when) it was last found down; a chain skips it for `DOWN_TTL` seconds."""
        self.registry: ProviderRegistry | None = None
        self.generation = -1
        self.version = 0
        """Bumped by every invalidate(): a probe that started before it must not store its (older) answer."""

    def sync(self, registry: ProviderRegistry) -> None:
        """Forget everything learnt under older settings (reinit, update, another registry)."""
        with self.lock:
            if registry is not self.registry or registry.generation != self.generation:
                self.registry, self.generation = registry, registry.generation
                self.detected.clear()
                self.down.clear()
                self.auto = None
                self.version += 1


_memory = _Memory()


def _registry() -> ProviderRegistry:
    registry = get_registry()
    _memory.sync(registry)
    return registry


def invalidate(name: str | None = None) -> None:
    """Forget detected models and the `auto` decision (a provider failed or changed)."""
    with _memory.lock:
        if name is None:
            _memory.detected.clear()
        else:
            _memory.detected.pop(name, None)
        if _memory.auto and (name is None or _memory.auto[0].provider == name):
            _memory.auto = None
        _memory.version += 1


def mark_down(name: str, reason: str | None) -> None:
    """Remember that `name` did not answer (None: it answered, forget that)."""
    with _memory.lock:
        if reason is None:
            _memory.down.pop(name, None)
        else:
            _memory.down[name] = (reason, time.monotonic())


def known_down(name: str) -> str | None:
    """Why `name` is known to be down, if it was found so in the last `DOWN_TTL` seconds."""
    _registry()
    with _memory.lock:
        found = _memory.down.get(name)
    if found and time.monotonic() - found[1] < DOWN_TTL:
        return found[0]
    return None


async def check(names: list[str] | None = None, timeout: float | None = None) -> dict[str, ProviderHealth]:
    """Probe providers (see `ProviderRegistry.check`) and remember what local servers serve."""
    registry = _registry()
    results = await registry.check(names, timeout)
    now = time.monotonic()
    with _memory.lock:
        for h in results.values():  # what a probe detected saves the next call a probe
            if h.connected:
                _memory.detected[h.provider] = (h.model_id if h.model_detected else None, now)
                _memory.down.pop(h.provider, None)
            elif h.down:
                _memory.down[h.provider] = (h.error or "down", now)
    return results


async def detected_model(name: str) -> str | None:
    """The model a local server reports, remembered for `DETECT_TTL` seconds."""
    _registry()
    cached = _memory.detected.get(name)
    if cached and time.monotonic() - cached[1] < DETECT_TTL:
        return cached[0]
    health = (await check([name]))[name]
    return health.model_id if health.model_detected else None


def choose_offline(provider: str | None, model: str | None = None) -> Choice:
    """Resolve a name (or `auto`) without touching the network.

    Offline, `auto` cannot know which local server answers, so a configured cloud
    key comes before the first local server by priority (which is not probed).
    """
    registry = _registry()
    name, model = _one_link(registry, provider, model)
    if name != AUTO:
        spec, settings = registry.require(name)
        return Choice(spec.name, model or settings.model, "named")
    choice = _openai_first(registry, model) or _other_cloud(registry, model, ["no OpenAI key"])
    if choice:
        return choice
    locals_ = _local_candidates(registry)
    if not locals_:
        _nothing_usable(["no cloud key and no local server enabled"])
    spec = locals_[0]
    return Choice(spec.name, model or registry.settings(spec.name).model,
                  f"auto (offline): no cloud key; {spec.label} is first among local servers (not probed)")


def _one_link(registry: ProviderRegistry, provider: str | None, model: str | None) -> tuple[str, str | None]:
    """A provider name and model for one answer: an alias, `provider:model` or a chain is
    resolved, and a chain gives its first link not known to be down (`get_model`, `--test`)."""
    name = (provider or AUTO).strip().lower()
    if name == AUTO or name in registry.names():  # the common case, without parsing
        return name, model
    links = resolve(provider, model).links
    link = next((link for link in links if link.provider == AUTO or not known_down(link.provider)), links[0])
    return link.provider, link.model


async def choose(provider: str | None, model: str | None = None, detect_model: bool = True) -> Choice:
    """Resolve a name (or `auto`, probing local servers concurrently) to a provider and model."""
    registry = _registry()
    name, model = _one_link(registry, provider, model)
    if name != AUTO:
        spec, settings = registry.require(name)
        if model or not probed(spec, settings) or not detect_model or not settings.model_is_default:
            return Choice(spec.name, model or settings.model, "named")
        detected = await detected_model(spec.name)
        return Choice(spec.name, detected or settings.model, "named; model detected" if detected else "named")
    if not detect_model:
        return await _choose_auto(registry, model, detect_model)
    with _memory.lock:
        cached, version = _memory.auto, _memory.version
    if cached and time.monotonic() - cached[1] < DETECT_TTL:
        choice = cached[0]
        return Choice(choice.provider, model, choice.reason) if model else choice
    choice = await _choose_auto(registry, model, detect_model)
    with _memory.lock:  # an invalidate() during the probes wins over this (older) answer
        if not model and version == _memory.version:
            _memory.auto = (choice, time.monotonic())
    return choice


async def _choose_auto(registry: ProviderRegistry, model: str | None, detect_model: bool) -> Choice:
    """OpenAI with a key; else the first local server that answers; else another cloud key."""
    first = _openai_first(registry, model)
    if first:
        return _log(first)
    locals_ = _local_candidates(registry)
    # Providers with a `prepare` hook (a server nbllm starts: the embedded model) are probed
    # only if reached, and come after every cloud key.
    plain = [s.name for s in locals_ if not s.prepare]
    health = await check(plain) if plain else {}
    cloud_key = any(s.kind == "cloud" and registry.settings(s.name).enabled and registry.settings(s.name).has_key
                    for s in catalog.all_specs())
    tried = []
    for spec in locals_:
        if spec.prepare and cloud_key:
            continue
        if spec.prepare:  # reached, with nothing else usable: start it (health checks never do)
            try:
                await registry.prepare(spec.name)
            except Exception as exc:  # not installed, or it cannot start: say why, go on
                tried.append(f"{spec.name} ({exc})")
                continue
        h = health.get(spec.name) or (await check([spec.name]))[spec.name]
        if h.connected:  # (check() has remembered its detected model)
            picked = model or (h.model_id if detect_model else None) or registry.settings(spec.name).model
            return _log(Choice(spec.name, picked, f"auto: {spec.label} answered at {h.base_url}"))
        tried.append(f"{spec.name} ({h.error or 'down'})")
    tried = ["no OpenAI key", *tried]
    return _log(_other_cloud(registry, model, tried) or _nothing_usable(tried))


def _local_candidates(registry: ProviderRegistry) -> list[ProviderSpec]:
    specs = [s for s in catalog.all_specs()
             if s.kind == "local" and registry.settings(s.name).enabled and registry.is_configured(s.name)]
    return sorted(specs, key=lambda s: s.auto_priority)


def _openai_first(registry: ProviderRegistry, model: str | None) -> Choice | None:
    openai = registry.settings("openai")
    if openai.enabled and openai.has_key:
        return Choice("openai", model or openai.model, "auto: OPENAI_API_KEY is set")
    return None


def _other_cloud(registry: ProviderRegistry, model: str | None, tried: list[str]) -> Choice | None:
    """The first other cloud provider with a key, in catalog order."""
    for spec in catalog.all_specs():
        st = registry.settings(spec.name)
        if spec.kind == "cloud" and spec.name != "openai" and st.enabled and st.has_key:
            return Choice(spec.name, model or st.model, f"auto: {spec.env_prefix} key is set; " + "; ".join(tried))
    return None


def _nothing_usable(tried: list[str]) -> NoReturn:
    raise ConfigurationError(f"auto found no usable provider ({'; '.join(tried)}). {catalog.NOTHING_USABLE_ADVICE}")


def _log(choice: Choice) -> Choice:
    log.info("nbllm %s → %s (%s)", choice.reason, choice.provider, choice.model)
    return choice
