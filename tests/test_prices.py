"""Prices: an answer's cost from genai-prices' offline data, 0 for a local server ("local"), None for
an unknown model (never 0), and declared prices for your own endpoints (environment or nbllm.toml)."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

import nbllm
from nbllm.prices import Price, price_for
from nbllm.registry import get_registry

from conftest import reset_nbllm


def _openai_reply(model: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


@pytest.fixture
def openai_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-prices-000000000000")
    reset_nbllm()


def test_a_known_cloud_model_costs_what_genai_prices_says(httpx2_mock, openai_key) -> None:
    httpx2_mock.post(url__regex=r"https://api\.openai\.com/v1/chat/completions").respond(
        200, json=_openai_reply("gpt-4o-mini", 2_000_000, 1_000_000))
    answer = nbllm.ask("hi", provider="openai", model="gpt-4o-mini")
    # gpt-4o-mini: $0.15 per million input tokens, $0.60 per million output tokens
    assert answer.cost_usd == pytest.approx(2 * 0.15 + 1 * 0.60)
    assert answer.cost_source == "genai-prices"
    assert nbllm.history(limit=1)["cost_usd"].iloc[0] == pytest.approx(0.90)


def test_an_unknown_model_costs_none_not_zero(httpx2_mock, openai_key) -> None:
    httpx2_mock.post(url__regex=r"https://api\.openai\.com/v1/chat/completions").respond(
        200, json=_openai_reply("my-finetune-xyz", 100, 10))
    answer = nbllm.ask("hi", provider="openai", model="my-finetune-xyz")
    assert answer.cost_usd is None and answer.cost_source == "unknown"
    assert price_for(get_registry().spec("openai"), get_registry().settings("openai"), "my-finetune-xyz") is None


def test_a_local_server_costs_zero_and_says_local(local_provider) -> None:
    answer = nbllm.ask("hi")
    assert answer.cost_usd == 0.0 and answer.cost_source == "local"
    registry = get_registry()
    assert price_for(registry.spec("embedded"), registry.settings("embedded")) == Price(0.0, 0.0, "local")


def test_prices_never_come_from_the_network(httpx2_mock, openai_key, monkeypatch) -> None:
    import genai_prices
    from genai_prices import data_snapshot

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("genai-prices was asked to update its prices")

    monkeypatch.setattr(genai_prices, "update_prices", refuse)
    httpx2_mock.post(url__regex=r"https://api\.openai\.com/v1/chat/completions").respond(
        200, json=_openai_reply("gpt-4o-mini", 10, 10))
    assert nbllm.ask("hi", provider="openai", model="gpt-4o-mini").cost_usd is not None
    assert data_snapshot._custom_snapshot is None  # the bundled snapshot, not one fetched at run time
    assert [call.request.url.host for call in httpx2_mock.calls] == ["api.openai.com"]


def test_declared_prices_for_your_own_endpoint_from_the_environment(local_provider, monkeypatch) -> None:
    monkeypatch.setenv("LMSTUDIO_PRICE_INPUT", "2")  # $2 per million input tokens
    monkeypatch.setenv("LMSTUDIO_PRICE_OUTPUT", "10")
    reset_nbllm()
    answer = nbllm.ask("hello there")  # the fake server reports 7 prompt tokens, one per word of the answer
    assert answer.cost_source == "declared"
    assert answer.cost_usd == pytest.approx((7 * 2 + answer.output_tokens * 10) / 1e6)


def test_declared_prices_in_the_endpoints_file(fake_server, endpoint_files) -> None:
    user_file, _ = endpoint_files
    user_file.write_text(f'[providers.gpu]\nbase_url = "{fake_server.url}/v1"\nprice_input = 1.5\n'
                         'price_output = "cheap"\n')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reset_nbllm()
        get_registry()
    assert any("price_output = 'cheap' is left out" in str(w.message) for w in caught)
    answer = nbllm.ask("hi", provider="gpu")
    assert answer.cost_source == "declared" and answer.cost_usd == pytest.approx(7 * 1.5 / 1e6)


def test_add_provider_writes_its_prices(fake_server, endpoint_files) -> None:
    user_file, _ = endpoint_files
    nbllm.add_provider("rented", fake_server.url + "/v1", price_input=0.5, price_output=1.0)
    assert "price_input = 0.5" in user_file.read_text() and "price_output = 1.0" in user_file.read_text()
    reset_nbllm()
    registry = get_registry()
    assert price_for(registry.spec("rented"), registry.settings("rented")) == Price(0.5, 1.0, "declared")


@pytest.mark.parametrize("url, expected", [
    ("https://api.groq.com/openai/v1", Price(0.59, 0.79, "genai-prices")),  # another public service: its prices
    ("https://my-company-llm.example.com/v1", None),  # a public address nobody lists: unknown, not free
    ("http://gpu:8000/v1", Price(0.0, 0.0, "local")),  # your own machine
    ("http://192.168.1.5:8000/v1", Price(0.0, 0.0, "local")),
])
def test_a_cloud_client_pointed_elsewhere_is_priced_by_where_it_goes(monkeypatch, url, expected) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-prices-000000000000")
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    reset_nbllm()
    registry = get_registry()
    assert price_for(registry.spec("openai"), registry.settings("openai"), "llama-3.3-70b-versatile") == expected


def test_half_a_declaration_takes_the_other_half_from_the_usual_rule(monkeypatch, local_provider) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-prices-000000000000")
    monkeypatch.setenv("OPENAI_PRICE_INPUT", "0.10")  # a negotiated input price; output as listed
    monkeypatch.setenv("LMSTUDIO_PRICE_OUTPUT", "3")
    reset_nbllm()
    registry = get_registry()
    assert price_for(registry.spec("openai"), registry.settings("openai"), "gpt-4o-mini") == Price(0.10, 0.6,
                                                                                                    "declared")
    assert price_for(registry.spec("lmstudio"), registry.settings("lmstudio")) == Price(0.0, 3.0, "declared")
    assert price_for(registry.spec("openai"), registry.settings("openai"), "unlisted-model") is None


def test_a_replayed_answer_costs_nothing(local_provider, monkeypatch) -> None:
    monkeypatch.setenv("LMSTUDIO_PRICE_INPUT", "1000")
    reset_nbllm()
    first = nbllm.ask("hi", cache="record")
    again = nbllm.ask("hi", cache="record")
    assert first.cost_usd > 0 and (again.cost_usd, again.cost_source, again.cached) == (0.0, "cached", True)


def test_a_price_from_the_endpoints_file_shows_in_the_list(fake_server, endpoint_files) -> None:
    user_file, _ = endpoint_files
    user_file.write_text(f'[providers.gpu]\nbase_url = "{fake_server.url}/v1"\nprice_input = 1.5\n')
    reset_nbllm()
    rows = {row["variable"]: row for row in get_registry().variables("gpu")}
    assert (rows["GPU_PRICE_INPUT"]["set"], rows["GPU_PRICE_INPUT"]["source"],
            rows["GPU_PRICE_INPUT"]["value"]) == (True, "file", "1.5")
    assert rows["GPU_PRICE_OUTPUT"]["set"] is False
