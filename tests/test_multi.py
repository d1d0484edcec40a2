"""compare and weighted consensus against several real local test servers at once
(different latencies, some failing), plus respx for the cloud providers' shapes."""

from __future__ import annotations

import asyncio
import json
import threading

import pandas as pd
import pytest
from pydantic import BaseModel

import nbllm
from nbllm.errors import ConfigurationError
from nbllm.multi import COMPARE_COLUMNS, TYPED_COLUMNS, ConsensusResult, normalise

from conftest import reset_nbllm

LOCAL = ("lmstudio", "ollama", "llamacpp")


def point(monkeypatch: pytest.MonkeyPatch, servers: dict, **env: str) -> None:
    """Aim local providers at test servers; everything else stays unreachable."""
    for name, server in servers.items():
        monkeypatch.setenv(f"{name.upper()}_BASE_URL", server.url + ("/v1" if name == "lmstudio" else ""))
        monkeypatch.setenv(f"{name.upper()}_MAX_RETRIES", "0")
    monkeypatch.setenv("NBLLM_HEALTH_TIMEOUT", "2")  # a bound: the 200 ms server needs a few probes
    monkeypatch.setenv("EMBEDDED_ENABLED", "0")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_nbllm()


@pytest.fixture
def trio(make_server, monkeypatch):
    """Three good servers at 50/100/200 ms that agree on Paris (written differently)."""
    servers = {
        "lmstudio": make_server(latency=0.05, reply="Paris."),
        "ollama": make_server(latency=0.1, reply="  paris "),
        "llamacpp": make_server(latency=0.2, reply="PARIS!"),
    }
    point(monkeypatch, servers)
    return servers


# ---- compare ------------------------------------------------------------------------------


def test_compare_asks_every_available_provider(trio):
    df = nbllm.compare("capital of France?")
    assert list(df.columns) == COMPARE_COLUMNS
    assert list(df["provider"]) == list(LOCAL)
    assert list(df["answer"]) == ["Paris.", "  paris ", "PARIS!"]
    assert df["error"].isna().all()
    assert (df["model"] == "fake-model").all()
    assert (df["input_tokens"] == 7).all() and (df["latency_ms"] > 0).all()
    for server in trio.values():
        assert len(server.chat_requests()) == 1


def test_compare_runs_providers_concurrently(trio):
    # Each server's answer waits until all three requests have arrived: sequential
    # requests would break the barrier and turn into error rows.
    barrier = threading.Barrier(3, timeout=5)
    for server in trio.values():
        original = server.reply_for
        server.reply_for = lambda body, original=original: (barrier.wait(), original(body))[1]
    df = nbllm.compare("together?", providers=list(LOCAL))
    assert df["error"].isna().all(), df["error"].tolist()


def test_compare_skips_providers_that_are_down(make_server, monkeypatch):
    servers = {"lmstudio": make_server(reply="up"), "ollama": make_server(mode="error")}
    point(monkeypatch, servers)
    df = nbllm.compare("who is up?")
    assert list(df["provider"]) == ["lmstudio"] and list(df["answer"]) == ["up"]


def test_failures_are_rows_not_exceptions(make_server, monkeypatch):
    servers = {
        "lmstudio": make_server(reply="fine"),
        "ollama": make_server(mode="error", status=500),
        "llamacpp": make_server(mode="hang"),
    }
    point(monkeypatch, servers, LLAMACPP_TIMEOUT="0.5", NBLLM_HEALTH_TIMEOUT="0.5")
    df = nbllm.compare("hello", providers=["lmstudio", "ollama", "llamacpp"]).set_index("provider")
    assert df.loc["lmstudio", "answer"] == "fine" and pd.isna(df.loc["lmstudio", "error"])
    assert "HTTP 500" in df.loc["ollama", "error"] and "ollama" in df.loc["ollama", "error"]
    assert "timed out" in df.loc["llamacpp", "error"]
    assert df.loc["llamacpp", "answer"] == "" and df.loc["llamacpp", "latency_ms"] >= 500


def test_a_disabled_named_provider_is_a_row(trio, monkeypatch):
    nbllm.disable("ollama")
    df = nbllm.compare("x", providers="lmstudio, ollama").set_index("provider")
    assert pd.isna(df.loc["lmstudio", "error"])
    assert "disabled" in df.loc["ollama", "error"]


def test_unknown_provider_and_bad_options_are_one_clear_error(trio):
    with pytest.raises(ConfigurationError, match="Valid providers"):
        nbllm.compare("x", providers=["lmstudio", "nope"])
    with pytest.raises(ConfigurationError, match="unknown option"):
        nbllm.compare("x", providers=["lmstudio"], temprature=0.1)
    with pytest.raises(ConfigurationError, match="empty"):
        nbllm.compare("  ", providers=["lmstudio"])
    with pytest.raises(ConfigurationError, match="chat memory"):
        nbllm.consensus("x", providers=["lmstudio"], chat=nbllm.conversation())
    assert all(not s.chat_requests() for s in trio.values())


def test_no_available_provider_says_so(monkeypatch):
    point(monkeypatch, {})
    with pytest.raises(ConfigurationError, match="No provider is available"):
        nbllm.compare("anyone?")


def test_compare_passes_options_to_every_provider(trio):
    nbllm.compare("hi", providers=["lmstudio", "ollama"], system="be brief", temperature=0.2, max_tokens=9)
    for name in ("lmstudio", "ollama"):
        body = trio[name].chat_requests()[-1]["body"]
        assert body["temperature"] == 0.2 and body["max_tokens"] == 9
        assert body["messages"][0] == {"role": "system", "content": "be brief"}


def test_compare_async(trio):
    df = asyncio.run(nbllm.compare_async("async?", providers=["ollama", "lmstudio"]))
    assert list(df["provider"]) == ["ollama", "lmstudio"]
    assert list(df["answer"]) == ["  paris ", "Paris."]


def test_compare_cloud_shapes_with_respx(httpx2_mock, monkeypatch):
    """OpenAI answers (with a known price), Grok is rate limited: one row each."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-0123456789")
    monkeypatch.setenv("GROK_API_KEY", "xai-test-grok-0123456789")
    monkeypatch.setenv("GROK_MAX_RETRIES", "0")
    reset_nbllm()
    httpx2_mock.post("https://api.openai.com/v1/chat/completions").respond(200, json={
        "id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-5-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "42"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500},
    })
    httpx2_mock.post("https://api.x.ai/v1/chat/completions").respond(
        429, json={"error": {"message": "slow down"}}, headers={"Retry-After": "3"})
    df = nbllm.compare("meaning?", providers=["openai", "grok"]).set_index("provider")
    assert df.loc["openai", "answer"] == "42" and df.loc["openai", "output_tokens"] == 500
    assert df.loc["openai", "cost_usd"] > 0
    assert "HTTP 429" in df.loc["grok", "error"]
    assert "xai-test" not in df.to_string() and "sk-test" not in df.to_string()


# ---- consensus -----------------------------------------------------------------------------


def test_normalise():
    assert normalise("  Paris. ") == normalise("PARIS!") == normalise('"paris"') == normalise("Paris\n") == "paris"
    assert normalise("New   York?!") == "new york"
    assert normalise("Paris, France") != normalise("Paris")
    assert normalise("ｐａｒｉｓ。") == "paris"


def test_consensus_agrees_despite_spelling(trio):
    result = nbllm.consensus("capital of France?")
    assert isinstance(result, ConsensusResult) and result.ok
    assert result.decision == "Paris."  # as the first provider asked wrote it
    assert result.confidence == 1.0 and result.confidence_asked == 1.0
    assert result.answers == {"lmstudio": "Paris.", "ollama": "  paris ", "llamacpp": "PARIS!"}
    assert result.failed == {} and result.votes == {"paris": 3.0} and not result.tie


def test_consensus_votes_with_weights(trio, monkeypatch):
    trio["llamacpp"].set(reply="Lyon")
    point(monkeypatch, trio, LMSTUDIO_WEIGHT="0.3", OLLAMA_WEIGHT="0.3", LLAMACPP_WEIGHT="0.9")
    result = nbllm.consensus("capital of France?")
    assert result.decision == "Lyon"
    assert result.votes == pytest.approx({"paris": 0.6, "lyon": 0.9})
    assert result.confidence == pytest.approx(0.9 / 1.5)
    frame = result.to_frame().set_index("provider")
    assert list(frame["agrees"]) == [False, False, True]
    assert list(frame["weight"]) == [0.3, 0.3, 0.9]


def test_a_failed_provider_lowers_confidence_but_never_breaks(trio, monkeypatch):
    trio["llamacpp"].set(mode="hang")
    trio["ollama"].set(reply="Lyon")
    point(monkeypatch, trio, LLAMACPP_TIMEOUT="0.5", NBLLM_HEALTH_TIMEOUT="0.5",
          LMSTUDIO_WEIGHT="1", OLLAMA_WEIGHT="0.5", LLAMACPP_WEIGHT="0.5")
    result = nbllm.consensus("capital?", providers=list(LOCAL))
    assert result.decision == "Paris."
    assert result.confidence == pytest.approx(1 / 1.5)  # among the answers
    assert result.confidence_asked == pytest.approx(1 / 2.0)  # among all asked: the timeout counts against it
    assert list(result.failed) == ["llamacpp"] and "timed out" in result.failed["llamacpp"]
    assert "failed: llamacpp" in result._repr_markdown_()


def test_no_answer_at_all_says_so(make_server, monkeypatch):
    servers = {"lmstudio": make_server(mode="error", status=503), "ollama": make_server(mode="error", status=500)}
    point(monkeypatch, servers)
    result = nbllm.consensus("anyone?", providers=["lmstudio", "ollama"])
    assert result.decision is None and not result.ok
    assert result.confidence == 0.0 and result.confidence_asked == 0.0
    assert set(result.failed) == {"lmstudio", "ollama"}
    assert result.message.startswith("No consensus: no provider answered")
    assert "HTTP 503" in result.message and "No consensus" in result._repr_html_()
    assert str(result) == result.message


def test_tie_goes_to_the_first_provider_asked(make_server, monkeypatch):
    servers = {"lmstudio": make_server(reply="yes"), "ollama": make_server(reply="no")}
    point(monkeypatch, servers)
    result = nbllm.consensus("?", providers=["ollama", "lmstudio"])
    assert result.tie and result.decision == "no" and result.confidence == 0.5


def test_empty_answer_is_not_a_vote(make_server, monkeypatch):
    servers = {"lmstudio": make_server(reply=""), "ollama": make_server(reply="Paris")}
    point(monkeypatch, servers)
    result = nbllm.consensus("?", providers=["lmstudio", "ollama"])
    assert result.decision == "Paris" and result.failed == {"lmstudio": "empty answer"}


def test_consensus_html_escapes_answers(make_server, monkeypatch):
    point(monkeypatch, {"lmstudio": make_server(reply="<script>alert(1)</script>")})
    html = nbllm.consensus("?", providers=["lmstudio"])._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_consensus_async(trio):
    result = asyncio.run(nbllm.consensus_async("?", providers=["lmstudio", "ollama"]))
    assert result.decision == "Paris." and result.confidence == 1.0


@pytest.mark.embedded
def test_compare_with_the_embedded_model(make_server, monkeypatch):
    """The real embedded SmolLM2 next to a test server: both rows come back, side by side."""
    from nbllm import embedded

    point(monkeypatch, {"lmstudio": make_server(reply="Paris")}, EMBEDDED_ENABLED="1")
    monkeypatch.delenv("EMBEDDED_BASE_URL")
    reset_nbllm()
    try:
        result = nbllm.consensus("What is the capital of France? One word.", providers=["embedded", "lmstudio"],
                                 temperature=0, max_tokens=12)
    finally:
        embedded.stop_server()
    frame = result.to_frame().set_index("provider")
    assert pd.isna(frame.loc["embedded", "error"]) and frame.loc["embedded", "answer"].strip()
    assert result.decision is not None and result.weight_asked == 2.0


# ---- typed answers (output_type=) ----------------------------------------------------------


class City(BaseModel):
    name: str
    population: int


def test_compare_with_output_type_says_which_providers_are_valid(make_server, monkeypatch):
    servers = {
        "lmstudio": make_server(reply='{"name": "Paris", "population": 2100000}'),
        "ollama": make_server(reply='{"name": "Paris", "population": "many"}'),  # invalid, twice
        "llamacpp": make_server(mode="error", status=500),
    }
    point(monkeypatch, servers)
    df = nbllm.compare("capital of France?", providers=list(LOCAL), output_type=City)
    assert list(df.columns) == TYPED_COLUMNS and df["valid"].dtype == bool
    assert list(df["valid"]) == [True, False, False]
    rows = df.set_index("provider")
    assert rows.loc["lmstudio", "output"] == City(name="Paris", population=2100000)
    assert json.loads(rows.loc["lmstudio", "answer"]) == {"name": "Paris", "population": 2100000}
    assert pd.isna(rows.loc["lmstudio", "error"])
    assert rows.loc["ollama", "answer"] == '{"name": "Paris", "population": "many"}'  # the raw text, kept
    assert rows.loc["ollama", "error"].startswith("not a valid City: population: Input should be a valid integer")
    assert rows.loc["ollama", "output"] is None
    assert "HTTP 500" in rows.loc["llamacpp", "error"]
    assert len(servers["ollama"].chat_requests()) == 2  # asked again once with the problem
    lmstudio_body = servers["lmstudio"].chat_requests()[-1]["body"]
    assert lmstudio_body["response_format"]["json_schema"]["schema"]["required"] == ["name", "population"]
    assert list(nbllm.compare("x", providers=["lmstudio"]).columns) == COMPARE_COLUMNS  # untyped: as before


def test_consensus_with_output_type_votes_on_the_values(make_server, monkeypatch):
    servers = {
        "lmstudio": make_server(reply='{"name": "Paris", "population": 2}'),
        "ollama": make_server(reply='{ "population": 2,\n "name": "Paris" }'),  # same value, other spelling
        "llamacpp": make_server(reply='{"name": "paris", "population": 2}'),  # another value: case is kept
    }
    point(monkeypatch, servers, LMSTUDIO_WEIGHT="0.5", OLLAMA_WEIGHT="0.5", LLAMACPP_WEIGHT="0.9")
    result = nbllm.consensus("?", providers=list(LOCAL), output_type=City)
    assert result.output == City(name="Paris", population=2)
    assert json.loads(result.decision) == {"name": "Paris", "population": 2}
    assert result.confidence == pytest.approx(1 / 1.9) and len(result.votes) == 2
    assert list(result.to_frame()["agrees"]) == [True, True, False]
    servers["llamacpp"].set(reply="not json")
    result = nbllm.consensus("?", providers=list(LOCAL), output_type=City)
    assert "llamacpp" in result.failed and "not a valid City" in result.failed["llamacpp"]
    assert result.confidence == 1.0 and result.confidence_asked == pytest.approx(1 / 1.9)


def test_an_invalid_typed_row_keeps_its_model_and_the_tokens_it_spent(make_server, monkeypatch):
    servers = {"lmstudio": make_server(reply='{"name": "Paris", "population": 2}'),
               "ollama": make_server(reply='{"name": "Paris", "population": "many"}')}
    point(monkeypatch, servers)
    rows = nbllm.compare("?", providers=["lmstudio", "ollama"], output_type=City).set_index("provider")
    valid, invalid = rows.loc["lmstudio"], rows.loc["ollama"]
    assert not invalid["valid"] and invalid["model"] and invalid["model"] == valid["model"]  # the same fake model
    # two replies (the answer and its one retry), each as much as the valid provider's one
    assert invalid["input_tokens"] == 2 * valid["input_tokens"] > 0
    assert invalid["output_tokens"] == 2 * valid["output_tokens"] > 0
    assert invalid["latency_ms"] > 0
