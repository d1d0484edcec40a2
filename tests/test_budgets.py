"""Budgets and spend: nothing is sent once a budget cannot cover the next request (counted at the
server), the overshoot is never more than what was in flight, unknown prices cannot be bounded,
and `nbllm.spend` sums the call log."""

from __future__ import annotations

import asyncio

import matplotlib
import pytest

import nbllm
from nbllm import budgets
from nbllm.errors import BudgetExhausted, ConfigurationError

from conftest import reset_nbllm

matplotlib.use("Agg")

PER_TOKEN = 0.001  # $1,000 per million tokens each way: one token costs a tenth of a cent


@pytest.fixture
def priced(local_provider, monkeypatch):
    """lmstudio on the fake server with declared prices (it reports 7 prompt tokens, one per answer word)."""
    monkeypatch.setenv("LMSTUDIO_PRICE_INPUT", "1000")
    monkeypatch.setenv("LMSTUDIO_PRICE_OUTPUT", "1000")
    monkeypatch.setenv("LMSTUDIO_MAX_TOKENS", "10")
    reset_nbllm()
    yield local_provider
    nbllm.budget(None)


def test_a_kernel_budget_stops_sending_when_it_cannot_cover_the_next_request(priced) -> None:
    limit = 0.05
    nbllm.budget(limit)
    # worst case per request: ~1 prompt token + 7 of chat framing + 10 answer tokens = $0.018;
    # each really costs 7 + 2 = $0.009
    answered = []
    with pytest.raises(BudgetExhausted) as caught:
        for _ in range(20):
            answered.append(nbllm.ask("hi"))
    assert len(answered) == len(priced.chat_requests()) == 4
    message = str(caught.value)
    assert "kernel budget of $0.05" in message and "nothing more is sent" in message
    assert "\n" not in message
    state = nbllm.budget()
    assert state is not None and state.spent == pytest.approx(4 * 9 * PER_TOKEN) and state.spent <= limit
    assert "1 refused" in repr(state) and "left $0.0140" in repr(state)
    nbllm.ask("hi", max_tokens=1)  # a cheaper request still fits: 1 + 7 + 1 tokens reserved
    assert len(priced.chat_requests()) == 5


def test_a_chain_moves_on_to_a_free_link_when_the_budget_cannot_cover_the_first(priced, make_server,
                                                                                 monkeypatch) -> None:
    free = make_server()
    monkeypatch.setenv("OLLAMA_BASE_URL", free.url)
    reset_nbllm()
    nbllm.budget(0.001)
    answer = nbllm.ask("hi", provider="lmstudio,ollama")
    assert answer.provider == "ollama" and answer.cost_usd == 0
    assert [(f.provider, f.reason) for f in answer.fallbacks] == [("lmstudio", "over budget")]
    assert priced.chat_requests() == [] and len(free.chat_requests()) == 1
    with pytest.raises(BudgetExhausted, match=r"tried first: lmstudio:a: over budget"):
        nbllm.ask("hi", provider="lmstudio:a,lmstudio:b")


def test_a_bad_budget_is_one_clear_error() -> None:
    for bad in ("two", True, -1, float("inf")):
        with pytest.raises(ConfigurationError, match="budget="):
            nbllm.budget(bad)


def test_concurrent_requests_never_overshoot_what_was_reserved(priced) -> None:
    nbllm.budget(0.1)

    async def many() -> list:
        return await asyncio.gather(*(nbllm.ask_async(f"q{i}") for i in range(40)), return_exceptions=True)

    results = asyncio.run(many())
    answered = [r for r in results if isinstance(r, nbllm.Answer)]
    refused = [r for r in results if isinstance(r, BudgetExhausted)]
    assert len(answered) + len(refused) == 40 and refused
    assert len(priced.chat_requests()) == len(answered)  # a refused request was never sent
    assert nbllm.budget().spent <= 0.1
    assert nbllm.budget().in_flight == 0 and nbllm.budget().reserved == 0


def test_an_unknown_price_cannot_be_bounded(httpx2_mock, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-budget-0000000000")
    reset_nbllm()
    nbllm.budget(10)
    try:
        with pytest.raises(BudgetExhausted, match="no known price"):
            nbllm.ask("hi", provider="openai", model="my-finetune-xyz")
        assert not httpx2_mock.calls
    finally:
        nbllm.budget(None)


def test_a_local_server_always_fits(local_provider) -> None:
    nbllm.budget(0)
    try:
        assert nbllm.ask("hi").cost_usd == 0
        assert nbllm.budget().spent == 0
    finally:
        nbllm.budget(None)


def test_a_stream_over_budget_ends_with_the_reason_and_no_request(priced) -> None:
    nbllm.budget(0.001)
    stream = nbllm.stream("tell me", raise_errors=False)
    assert list(stream) == [] and "nothing more is sent" in (stream.answer.error or "")
    assert priced.chat_requests() == []


def test_compare_takes_a_budget_of_its_own(priced, make_server, monkeypatch) -> None:
    other = make_server()
    monkeypatch.setenv("OLLAMA_BASE_URL", other.url)
    monkeypatch.setenv("OLLAMA_PRICE_INPUT", "1000")
    monkeypatch.setenv("OLLAMA_PRICE_OUTPUT", "1000")
    monkeypatch.setenv("OLLAMA_MAX_TOKENS", "10")
    reset_nbllm()
    table = nbllm.compare("hi", providers=["lmstudio", "ollama"], budget=0.025)  # room for one worst case ($0.018)
    assert table["error"].notna().sum() == 1 and table["error"].str.contains("budget of this comparison").any()
    assert len(priced.chat_requests()) + len(other.chat_requests()) == 1
    with pytest.raises(ConfigurationError, match="budget="):
        nbllm.compare("hi", providers=["lmstudio"], budget=-1)


def test_a_scoped_budget_and_the_kernel_budget_both_apply(priced) -> None:
    nbllm.budget(1.0)

    async def inside() -> None:
        with budgets.scoped(0.02, "test budget"):
            await nbllm.ask_async("one")  # $0.018 reserved, $0.009 spent
            with pytest.raises(BudgetExhausted, match="test budget"):
                await nbllm.ask_async("two")

    asyncio.run(inside())
    assert nbllm.budget().spent == pytest.approx(0.009)  # the kernel saw the one request sent


def test_spend_sums_the_call_log_by_provider_model_and_day(priced) -> None:
    nbllm.ask("one")
    nbllm.ask("two", cache="record")
    nbllm.ask("two", cache="record")  # replayed: it cost nothing this time
    frame = nbllm.spend()
    assert list(frame.index) == ["lmstudio"]
    row = frame.loc["lmstudio"]
    assert row["calls"] == 2 and row["cost_usd"] == pytest.approx(2 * 9 * PER_TOKEN) and row["unknown_cost"] == 0
    assert row["input_tokens"] == 14
    by_model = nbllm.spend(by="model")
    assert by_model.index[0].startswith("lmstudio:")
    day = nbllm.spend(by="day")
    assert len(day) == 1 and len(day.index[0]) == 10
    assert nbllm.spend(since="2999-01-01").empty
    with pytest.raises(ConfigurationError, match="by="):
        nbllm.spend(by="week")


def test_spend_counts_unknown_costs_apart_and_draws_one_bar_per_provider(priced, make_server, monkeypatch) -> None:
    import matplotlib.pyplot as plt

    other = make_server()
    monkeypatch.setenv("OLLAMA_BASE_URL", other.url)
    monkeypatch.setenv("OLLAMA_PRICE_INPUT", "1")
    reset_nbllm()
    nbllm.ask("a")
    nbllm.ask("b", provider="ollama")
    plt.close("all")
    frame = nbllm.spend(plot=True)
    assert set(frame.index) == {"lmstudio", "ollama"}
    bars = plt.gcf().axes[0].patches
    assert len(bars) == 2
    assert bars[0].get_height() == pytest.approx(frame["cost_usd"].iloc[0])


def test_the_budget_reserves_at_least_what_the_estimate_says(priced) -> None:
    from pydantic import BaseModel

    from nbllm import bridge, pipeline

    class Review(BaseModel):
        label: str
        score: int

    for output_type in (None, Review):
        prompt = "Rate this kettle: it boils fast but the lid sticks."
        estimated = nbllm.estimate_prompt(prompt, output_type=output_type, system="be brief")
        call = pipeline.describe(prompt, output_type=output_type, system="be brief")
        reserved, _, _ = budgets.worst_case(call, bridge.run(pipeline.route(call)))
        assert estimated.usd_high is not None and reserved >= estimated.usd_high, output_type
    assert priced.chat_requests() == []
