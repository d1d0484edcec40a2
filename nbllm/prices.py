"""What a request costs, before and after: declared prices, genai-prices' offline data, or 0 when local.

The order, one rule for answers, estimates and budgets:
1. a price declared for the provider — `{P}_PRICE_INPUT` / `{P}_PRICE_OUTPUT` (USD per million
   tokens) or `price_input` / `price_output` in its nbllm.toml entry — wins ("declared");
2. a local server costs 0 ("local": LM Studio, Ollama, llama.cpp, vLLM, the embedded model, and a
   cloud provider's client pointed at your own machine — a loopback, private or `.local` address,
   or a bare host name). A cloud provider pointed at another public service (`OPENAI_BASE_URL` at
   Groq or OpenRouter) is that service: priced by its address in genai-prices, else unknown;
3. a cloud model is looked up in genai-prices' bundled snapshot ("genai-prices"); nbllm never
   asks genai-prices to download newer prices at run time;
4. otherwise the cost is unknown: None, never 0 ("unknown").
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .catalog import ProviderSpec
    from .config import ProviderSettings

__all__ = ["Price", "price_for", "model_info", "answer_cost", "PRICES_IDS", "Source", "is_local", "declared"]

Source = Literal["declared", "local", "genai-prices", "unknown"]

PRICES_IDS = {"gemini": "google", "grok": "x-ai"}
"""nbllm provider names that genai-prices spells differently (the others are the same)."""


@dataclass(frozen=True)
class Price:
    """USD per million tokens, and where the numbers come from."""

    input_per_mtok: float
    output_per_mtok: float
    source: Source

    def cost(self, input_tokens: int | None, output_tokens: int | None) -> float:
        return ((input_tokens or 0) * self.input_per_mtok + (output_tokens or 0) * self.output_per_mtok) / 1e6


_LOCAL = Price(0.0, 0.0, "local")


def is_local(spec: "ProviderSpec", settings: "ProviderSettings") -> bool:
    """Whether requests go to your own machine or network (they cost nothing): a local provider, or a
    cloud provider's client pointed at a loopback, private, link-local or `.local` address, or a
    bare host name (`http://gpu:8000/v1`)."""
    from .health import self_hosted  # looked up per call: one rule, in health.py

    if spec.kind == "local":
        return True
    return self_hosted(spec, settings) and _private_host(settings.base_url)


@functools.lru_cache(maxsize=64)
def _private_host(url: str) -> bool:
    import ipaddress
    from urllib.parse import urlsplit

    host = (urlsplit(url).hostname or "").lower()
    if not host or host == "localhost" or host.endswith((".local", ".lan", ".internal", ".localhost")) \
            or "." not in host:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_private or address.is_loopback or address.is_link_local


def model_info(spec_name: str, model: str, base_url: str | None = None) -> Any:
    """genai-prices' entry for a model (its prices, `context_window`), from the bundled snapshot; None if unknown."""
    try:
        from genai_prices import data_snapshot
    except ImportError:
        return None
    snapshot = data_snapshot.get_snapshot()
    for by_id, by_url in ((PRICES_IDS.get(spec_name, spec_name), None), (None, base_url)):
        if by_id is None and not by_url:
            continue
        try:
            return snapshot.find_provider_model(model, None, by_id, by_url)[1]
        except LookupError:
            continue
    return None


@functools.lru_cache(maxsize=256)
def _genai_price(name: str, base_url: str, model: str, self_hosted: bool) -> Price | None:
    """The base-tier price in genai-prices' bundled data (a million tokens each way: long-context tiers
    start above), looked up by the provider's name — or only by its address when it is pointed at
    another service. Cached: the snapshot does not change while nbllm runs."""
    from genai_prices import Usage, calc_price

    if self_hosted:
        references = [{"provider_api_url": base_url}]
    else:
        references = [{"provider_id": PRICES_IDS.get(name, name)}, {"provider_api_url": base_url}]
    for reference in references:
        try:
            per_input = calc_price(Usage(input_tokens=1_000_000, output_tokens=0), model, **reference).total_price
            per_output = calc_price(Usage(input_tokens=0, output_tokens=1_000_000), model, **reference).total_price
        except Exception:  # not listed that way, or without a usable price
            continue
        return Price(float(per_input), float(per_output), "genai-prices")
    return None


def declared(spec: "ProviderSpec", settings: "ProviderSettings") -> tuple[float | None, float | None]:
    """The declared USD per million input and output tokens: `{P}_PRICE_*`, else the endpoints file's."""
    file_in, file_out = spec.extra.get("price_input"), spec.extra.get("price_output")
    price_in = settings.price_input if settings.price_input is not None else (
        float(file_in) if file_in is not None else None)
    price_out = settings.price_output if settings.price_output is not None else (
        float(file_out) if file_out is not None else None)
    return price_in, price_out


def price_for(spec: "ProviderSpec", settings: "ProviderSettings", model: str | None = None) -> Price | None:
    """The price of `model` on this provider (see the module docstring for the order); None when unknown.
    Half a declaration (only `{P}_PRICE_INPUT`) takes the other half from the rule that would apply
    without it; with nothing to take it from, the price is unknown (never a free half)."""
    from .health import self_hosted

    price_in, price_out = declared(spec, settings)
    otherwise = _LOCAL if is_local(spec, settings) else (
        None if spec.kind != "cloud" else _genai_price(spec.name, settings.base_url, model or settings.model,
                                                       self_hosted(spec, settings)))
    if price_in is None and price_out is None:
        return otherwise
    if price_in is None or price_out is None:
        if otherwise is None:
            return None
        price_in = otherwise.input_per_mtok if price_in is None else price_in
        price_out = otherwise.output_per_mtok if price_out is None else price_out
    return Price(price_in, price_out, "declared")


def answer_cost(spec: "ProviderSpec", settings: "ProviderSettings", model: str, responses: list[Any],
                input_tokens: int | None, output_tokens: int | None) -> tuple[float | None, Source]:
    """An answer's cost and its source. genai-prices prices the responses themselves (cache reads and
    tiers included); a declared or local price multiplies the tokens; unknown usage or price: None."""
    price = price_for(spec, settings, model)
    if price is None:
        return None, "unknown"
    if price.source != "genai-prices":
        if price.source == "declared" and input_tokens is None and output_tokens is None:
            return None, "unknown"  # the server sent no usage: the cost cannot be known
        return price.cost(input_tokens, output_tokens), price.source
    try:
        return sum(float(r.cost().total_price) for r in responses), "genai-prices"
    except Exception:  # the response omitted usage, or the model's price needs more than it gave
        return None, "unknown"
