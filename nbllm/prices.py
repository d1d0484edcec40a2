"""What a request costs, before and after: declared prices, genai-prices' offline data, or 0 when local.

The order, one rule for answers, estimates and budgets:
1. a price declared for the provider — `{P}_PRICE_INPUT` / `{P}_PRICE_OUTPUT` (USD per million
   tokens) or `price_input` / `price_output` in its nbllm.toml entry — wins ("declared");
2. a local or self-hosted server costs 0 ("local": LM Studio, Ollama, llama.cpp, vLLM, the
   embedded model, OpenAI's client pointed at your own server);
3. a cloud model is looked up in genai-prices' bundled snapshot ("genai-prices"); nbllm never
   asks genai-prices to download newer prices at run time;
4. otherwise the cost is unknown: None, never 0 ("unknown").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .catalog import ProviderSpec
    from .config import ProviderSettings

__all__ = ["Price", "price_for", "model_info", "answer_cost", "PRICES_IDS", "Source"]

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


def _local(spec: "ProviderSpec", settings: "ProviderSettings") -> bool:
    from .health import self_hosted

    return spec.kind == "local" or self_hosted(spec, settings)


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


def _genai_price(spec: "ProviderSpec", settings: "ProviderSettings", model: str) -> Price | None:
    """The base-tier price in genai-prices' bundled data (a million tokens each way: long-context tiers start above)."""
    if model_info(spec.name, model, settings.base_url) is None:
        return None
    from genai_prices import Usage, calc_price

    reference = {"provider_id": PRICES_IDS.get(spec.name, spec.name)}
    try:
        per_input = calc_price(Usage(input_tokens=1_000_000, output_tokens=0), model, **reference).total_price
        per_output = calc_price(Usage(input_tokens=0, output_tokens=1_000_000), model, **reference).total_price
    except Exception:  # listed by URL only, or without a usable price
        return None
    return Price(float(per_input), float(per_output), "genai-prices")


def price_for(spec: "ProviderSpec", settings: "ProviderSettings", model: str | None = None) -> Price | None:
    """The price of `model` on this provider (see the module docstring for the order); None when unknown."""
    declared_in, declared_out = settings.price_input, settings.price_output
    file_in, file_out = spec.extra.get("price_input"), spec.extra.get("price_output")
    if declared_in is None and file_in is not None:
        declared_in = float(file_in)
    if declared_out is None and file_out is not None:
        declared_out = float(file_out)
    if declared_in is not None or declared_out is not None:
        return Price(declared_in or 0.0, declared_out or 0.0, "declared")
    if _local(spec, settings):
        return _LOCAL
    return _genai_price(spec, settings, model or settings.model)


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
