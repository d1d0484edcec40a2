"""Fallback chains (`a,b,c`) and `provider:model`, against real local servers.

lmstudio and llamacpp are pointed at fake servers; a refused primary is a port nothing
listens on. Each test checks who answered, who was passed over and why, what each
server was sent, and the call log's row.
"""

from __future__ import annotations

import time

import pytest

import nbllm
from nbllm.errors import ConfigurationError, ModelError

from conftest import _closed_port_url, nbllm_shell, reset_nbllm, run_cell


@pytest.fixture
def two(make_server, monkeypatch):
    """lmstudio → server A, llamacpp → server B (both answering; models named, so a call is not
    preceded by a model-detection probe and each fault reaches the chat request)."""
    a, b = make_server(), make_server()
    monkeypatch.setenv("LMSTUDIO_BASE_URL", a.url + "/v1")
    monkeypatch.setenv("LLAMACPP_BASE_URL", b.url)
    monkeypatch.setenv("LMSTUDIO_MODEL", "fake-model")
    monkeypatch.setenv("LLAMACPP_MODEL", "fake-model")
    reset_nbllm()
    return a, b


def _refused_primary(monkeypatch):
    monkeypatch.setenv("LMSTUDIO_BASE_URL", _closed_port_url() + "/v1")
    reset_nbllm()


def test_a_refused_primary_falls_back_and_says_so(two, monkeypatch):
    _, b = two
    _refused_primary(monkeypatch)
    answer = nbllm.ask("hello", provider="lmstudio,llamacpp")
    assert answer.text == "Echo: hello"
    assert answer.provider == "llamacpp"
    assert [f.provider for f in answer.fallbacks] == ["lmstudio"]
    assert "refused" in answer.fallbacks[0].reason
    assert len(b.chat_requests()) == 1
    row = nbllm.history().iloc[-1]
    assert row["provider"] == "llamacpp" and row["asked"] == "lmstudio,llamacpp"
    assert row["fallbacks"].startswith("lmstudio: ") and "connection refused" in row["fallbacks"]


def test_a_429_moves_on_at_once_instead_of_waiting(two):
    a, b = two
    a.set(mode="error", status=429, retry_after=30)
    started = time.perf_counter()
    answer = nbllm.ask("hi", provider="lmstudio,llamacpp")
    assert time.perf_counter() - started < 5  # not 30 s of Retry-After, nor the backoff
    assert answer.provider == "llamacpp"
    assert len(a.chat_requests()) == 1 and len(b.chat_requests()) == 1
    assert "429" in answer.fallbacks[0].reason


@pytest.mark.parametrize("status", [500, 503])
def test_a_5xx_moves_on_without_retrying_the_primary(two, status):
    a, b = two
    a.set(mode="error", status=status)
    answer = nbllm.ask("hi", provider="lmstudio,llamacpp")
    assert answer.provider == "llamacpp" and len(a.chat_requests()) == 1
    assert str(status) in answer.fallbacks[0].reason


def test_a_hanging_primary_moves_on_after_its_timeout(two, monkeypatch):
    a, b = two
    a.set(mode="hang")
    monkeypatch.setenv("LMSTUDIO_TIMEOUT", "0.5")
    reset_nbllm()
    started = time.perf_counter()
    answer = nbllm.ask("hi", provider="lmstudio,llamacpp")
    assert 0.4 < time.perf_counter() - started < 5
    assert answer.provider == "llamacpp" and "timed out" in answer.fallbacks[0].reason


@pytest.mark.parametrize("status", [400, 401, 404])
def test_a_request_error_stops_the_chain(two, status):
    a, b = two
    a.set(mode="error", status=status)
    with pytest.raises(ModelError) as caught:
        nbllm.ask("hi", provider="lmstudio,llamacpp")
    assert caught.value.status == status and caught.value.provider == "lmstudio"
    assert b.chat_requests() == []  # trying elsewhere would hide that the request is wrong
    assert nbllm.history().iloc[-1]["outcome"] == "error"


def test_the_last_links_failure_is_raised_with_the_chain_logged(two, monkeypatch):
    a, b = two
    _refused_primary(monkeypatch)
    b.set(mode="error", status=500)
    monkeypatch.setenv("LLAMACPP_MAX_RETRIES", "1")
    reset_nbllm()
    with pytest.raises(ModelError) as caught:
        nbllm.ask("hi", provider="lmstudio,llamacpp")
    assert caught.value.provider == "llamacpp" and caught.value.status == 500
    assert len(b.chat_requests()) == 2  # the last link retries under its policy
    row = nbllm.history().iloc[-1]
    assert row["outcome"] == "error" and "connection refused" in row["fallbacks"]


def test_a_provider_known_down_is_skipped_without_a_request(two, monkeypatch):
    a, b = two
    a.set(mode="hang")
    nbllm.health_check(timeout=0.3)  # health finds lmstudio down
    a.set(mode="ok")
    started = time.perf_counter()
    answer = nbllm.ask("hi", provider="lmstudio,llamacpp")
    assert time.perf_counter() - started < 2
    assert answer.provider == "llamacpp"
    assert a.chat_requests() == []
    assert "known to be down" in answer.fallbacks[0].reason


def test_a_probe_that_finds_the_primary_down_moves_on_without_sending_the_prompt(two, monkeypatch):
    a, b = two
    monkeypatch.delenv("LMSTUDIO_MODEL")  # its model is detected: routing probes it first
    reset_nbllm()
    a.set(mode="error", status=503)
    answer = nbllm.ask("hi", provider="lmstudio,llamacpp")
    assert answer.provider == "llamacpp" and a.chat_requests() == []
    assert "found down" in answer.fallbacks[0].reason and "503" in answer.fallbacks[0].reason


def test_a_probe_refused_with_401_is_not_down_and_the_call_says_why(two, monkeypatch):
    a, b = two
    monkeypatch.delenv("LMSTUDIO_MODEL")
    reset_nbllm()
    a.set(mode="error", status=401)
    with pytest.raises(ModelError) as caught:
        nbllm.ask("hi", provider="lmstudio,llamacpp")
    assert caught.value.status == 401 and b.chat_requests() == []


def test_a_disabled_link_is_skipped_offline(two, monkeypatch):
    monkeypatch.setenv("LMSTUDIO_ENABLED", "0")
    reset_nbllm()
    answer = nbllm.ask("hi", provider="lmstudio,llamacpp")
    assert answer.provider == "llamacpp" and str(answer.fallbacks[0]) == "lmstudio: disabled"


def test_a_chain_with_nothing_usable_is_one_error(monkeypatch):
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    reset_nbllm()
    with pytest.raises(ConfigurationError) as caught:
        nbllm.ask("hi", provider="openai,anthropic")
    message = str(caught.value)
    assert "points at nothing usable" in message and "OPENAI_API_KEY" in message and "\n" not in message


def test_an_unknown_link_names_the_valid_choices():
    with pytest.raises(ConfigurationError) as caught:
        nbllm.ask("hi", provider="lmstudio,nosuch")
    assert "'nosuch'" in str(caught.value) and "Valid providers" in str(caught.value)


def test_a_stream_falls_back_before_its_first_chunk(two):
    a, b = two
    a.set(mode="error", status=500)
    stream = nbllm.stream("streamed", provider="lmstudio,llamacpp")
    text = "".join(stream)
    assert text == "Echo: streamed"
    assert stream.answer.provider == "llamacpp" and stream.answer.fallbacks[0].provider == "lmstudio"
    assert nbllm.history().iloc[-1]["asked"] == "lmstudio,llamacpp"


def test_a_stream_cut_after_its_first_chunk_keeps_the_text_and_does_not_fall_back(two):
    a, b = two
    a.set(mode="cut_stream", cut_after=2, reply="one two three four five six")
    stream = nbllm.stream("x", provider="lmstudio,llamacpp", raise_errors=False)
    text = "".join(stream)
    assert text and stream.answer.error and stream.answer.provider == "lmstudio"
    assert stream.answer.text == text
    assert b.chat_requests() == []
    assert nbllm.history().iloc[-1]["outcome"] == "partial"


def test_provider_colon_model_sends_that_model(two):
    a, b = two
    answer = nbllm.ask("hi", provider="llamacpp:my-model:q4")
    assert answer.model == "my-model:q4"
    assert b.chat_requests()[-1]["body"]["model"] == "my-model:q4"


def test_use_takes_a_model_after_the_first_colon_and_chains(two, monkeypatch):
    assert nbllm.use("ollama:qwen3:8b") == nbllm.session.Selection("ollama", "qwen3:8b")
    nbllm.use("lmstudio,llamacpp")
    assert nbllm.current().provider == "lmstudio,llamacpp"
    _refused_primary(monkeypatch)  # (resets the default too)
    nbllm.use("lmstudio,llamacpp")
    assert nbllm.ask("hi").provider == "llamacpp"


def test_nbllm_provider_may_be_a_chain(two, monkeypatch):
    monkeypatch.setenv("NBLLM_PROVIDER", "lmstudio,llamacpp")
    _refused_primary(monkeypatch)
    assert nbllm.ask("hi").provider == "llamacpp"


def test_compare_takes_provider_colon_model(two):
    frame = nbllm.compare("hi", providers=["lmstudio:first-model", "llamacpp"])
    assert list(frame["provider"]) == ["lmstudio", "llamacpp"]
    assert frame["model"].iloc[0] == "first-model"
    assert two[0].chat_requests()[-1]["body"]["model"] == "first-model"


def test_map_over_a_chain_with_a_refused_primary_answers_every_input(two, monkeypatch):
    _, b = two
    _refused_primary(monkeypatch)
    results = nbllm.map(["a", "b", "c", "d"], "Say {}", provider="lmstudio,llamacpp")
    assert list(results) == ["Echo: Say a", "Echo: Say b", "Echo: Say c", "Echo: Say d"]
    assert len(b.chat_requests()) == 4


def test_the_cell_footer_says_who_answered_instead(two, monkeypatch):
    _refused_primary(monkeypatch)
    with nbllm_shell() as shell:
        _, outputs, printed = run_cell(shell, "%%llm -p lmstudio,llamacpp\nhello")
    shown = " ".join(str(o) for o in outputs) + printed
    assert "Echo: hello" in shown
    assert "llamacpp" in shown and "instead of lmstudio: connection refused" in shown


# ---- aliases: usable wherever a provider is named ------------------------------------------


def test_an_alias_names_a_provider_and_model_everywhere(two):
    a, b = two
    nbllm.alias("fast", "llamacpp:small-model")
    answer = nbllm.ask("hi", provider="fast")
    assert answer.provider == "llamacpp" and b.chat_requests()[-1]["body"]["model"] == "small-model"
    assert nbllm.use("fast").provider == "fast"  # the default stays as the user chose it
    assert nbllm.ask("again").provider == "llamacpp"
    assert nbllm.ask("hi", provider="fast:other-model").model == "other-model"
    frame = nbllm.compare("hi", providers=["fast", "lmstudio"])
    assert list(frame["provider"]) == ["llamacpp", "lmstudio"] and frame["model"].iloc[0] == "small-model"
    with nbllm_shell() as shell:
        _, outputs, printed = run_cell(shell, "%%llm -p fast -o out\nhello")
        assert shell.user_ns["out"] == "Echo: hello"
    assert nbllm.history().iloc[-1]["asked"] == "fast"  # as the user wrote it; `provider` is who answered


def test_an_alias_may_be_a_chain_and_may_fall_back_on_any_error(two):
    a, b = two
    a.set(mode="error", status=401)
    nbllm.alias("strict", "lmstudio,llamacpp")
    with pytest.raises(ModelError):
        nbllm.ask("hi", provider="strict")  # a 401 stops a chain…
    nbllm.alias("robust", "lmstudio,llamacpp", on="any")
    answer = nbllm.ask("hi", provider="robust")  # …unless the alias says otherwise
    assert answer.provider == "llamacpp" and "401" in answer.fallbacks[0].reason


def test_an_alias_that_points_at_nothing_usable_says_so_in_one_line(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    reset_nbllm()
    nbllm.alias("cloud", "openai,anthropic")
    with pytest.raises(ConfigurationError) as caught:
        nbllm.ask("hi", provider="cloud")
    message = str(caught.value)
    assert message.startswith("alias 'cloud' points at nothing usable") and "\n" not in message


# ---- what a review found --------------------------------------------------------------------


def test_a_chain_records_and_replays_with_the_replay_cache(two, monkeypatch):
    a, b = two
    _refused_primary(monkeypatch)
    nbllm.cache("record")
    assert nbllm.ask("cached?", provider="lmstudio,llamacpp").text == "Echo: cached?"
    b.set(mode="error", status=500)
    nbllm.cache("replay")
    replayed = nbllm.ask("cached?", provider="lmstudio,llamacpp")
    assert replayed.text == "Echo: cached?" and replayed.cached
    assert "".join(nbllm.stream("cached?", provider="lmstudio,llamacpp")) == "Echo: cached?"


def test_a_refused_stream_marks_its_provider_down_for_the_next_call(two, monkeypatch):
    _refused_primary(monkeypatch)
    monkeypatch.setenv("LMSTUDIO_MODEL", "fake-model")  # no detection probe: the stream itself is refused
    reset_nbllm()
    first = nbllm.stream("one", provider="lmstudio,llamacpp")
    assert "".join(first) == "Echo: one" and "refused" in first.answer.fallbacks[0].reason
    second = nbllm.stream("two", provider="lmstudio,llamacpp")
    assert "".join(second) == "Echo: two" and "known to be down" in second.answer.fallbacks[0].reason


def test_a_chain_that_fails_entirely_names_every_link(two, monkeypatch):
    a, b = two
    _refused_primary(monkeypatch)
    monkeypatch.setenv("LLAMACPP_BASE_URL", _closed_port_url())
    reset_nbllm()
    with pytest.raises(ModelError) as caught:
        nbllm.ask("hi", provider="lmstudio,llamacpp")
    message = str(caught.value)
    assert message.startswith("llamacpp") and "tried first: lmstudio:" in message and "\n" not in message


def test_on_any_applies_only_to_the_aliases_own_links(two, make_server, monkeypatch):
    a, b = two
    c = make_server()
    monkeypatch.setenv("OLLAMA_BASE_URL", c.url)
    monkeypatch.setenv("OLLAMA_MODEL", "fake-model")
    reset_nbllm()
    nbllm.alias("robust", "llamacpp,ollama", on="any")
    a.set(mode="error", status=401)
    with pytest.raises(ModelError) as caught:  # lmstudio is not robust's: its 401 stops the chain
        nbllm.ask("hi", provider="lmstudio,robust")
    assert caught.value.status == 401 and b.chat_requests() == []
    b.set(mode="error", status=401)
    answer = nbllm.ask("hi", provider="robust")  # llamacpp is: its 401 moves on to ollama
    assert answer.provider == "ollama"


def test_a_fleet_does_not_multiply_retries(make_server, monkeypatch):
    servers = [make_server(mode="error", status=500) for _ in range(3)]
    monkeypatch.setenv("VLLM_BASE_URL", ",".join(s.url + "/v1" for s in servers))
    monkeypatch.setenv("VLLM_MODEL", "m")
    monkeypatch.setenv("VLLM_MAX_RETRIES", "2")
    reset_nbllm()

    with pytest.raises(ModelError) as caught:
        nbllm.ask("hi", provider="vllm")
    sent = sum(len(s.chat_requests()) for s in servers)
    assert sent == 3 + 2  # each server once, then the two retries: not (2 + 1) × 3
    assert all(s.chat_requests() for s in servers) and caught.value.attempts == 5


def test_nbllm_provider_keeps_the_models_case(two, monkeypatch):
    monkeypatch.setenv("NBLLM_PROVIDER", "LlamaCpp:Org/Model-8B")
    reset_nbllm()
    assert nbllm.current() == nbllm.session.Selection("llamacpp", "Org/Model-8B")
    nbllm.ask("hi")
    assert two[1].chat_requests()[-1]["body"]["model"] == "Org/Model-8B"


def test_use_an_alias_with_a_model_keeps_the_model(two):
    nbllm.alias("fast", "llamacpp:small")
    assert nbllm.use("fast", "bigger") == nbllm.session.Selection("fast", "bigger")
    assert nbllm.ask("hi").model == "bigger"


def test_a_typo_gets_a_suggestion():
    with pytest.raises(ConfigurationError) as caught:
        nbllm.ask("hi", provider="lmstudo")
    assert "Did you mean 'lmstudio'?" in str(caught.value)


def test_compare_says_who_answered_a_chain_and_counts_an_alias_of_a_provider_once(two, monkeypatch):
    nbllm.alias("fast", "llamacpp:fake-model")
    frame = nbllm.compare("hi", providers=["fast", "llamacpp:fake-model", "lmstudio,llamacpp"])
    assert len(frame) == 2
    _refused_primary(monkeypatch)
    nbllm.alias("fast", "llamacpp:fake-model")
    frame = nbllm.compare("hi", providers=["lmstudio,llamacpp"])
    assert list(frame["provider"]) == ["llamacpp"]


# ---- every face takes every kind of name -----------------------------------------------------


def test_the_command_line_uses_and_tests_chains_aliases_and_provider_colon_model(two, capsys):
    from nbllm.cli import main

    nbllm.alias("fast", "llamacpp:fake-model")
    assert main(["providers", "--use", "lmstudio,llamacpp"]) == 0
    assert "default: lmstudio,llamacpp" in capsys.readouterr().out
    assert main(["providers", "--use", "ollama:qwen3:8b"]) == 0
    assert "default: ollama (qwen3:8b)" in capsys.readouterr().out
    assert main(["providers", "--test", "fast", "--timeout", "2"]) == 0
    assert "llamacpp: answering" in capsys.readouterr().out
    assert main(["providers", "--test", "lmstudio,llamacpp", "--timeout", "2"]) == 0
    out = capsys.readouterr().out
    assert "lmstudio: answering" in out and "llamacpp: answering" in out
    assert main(["providers", "--use", "lmstudio,nosuch"]) == 2
    assert "Invalid LLM provider 'nosuch'" in capsys.readouterr().err


def test_the_magic_uses_an_alias_and_the_next_cell_follows_it(two):
    nbllm.alias("fast", "llamacpp:small")
    with nbllm_shell() as shell:
        run_cell(shell, "%llm_providers --use fast")
        assert nbllm.current().provider == "fast"
        _, _, printed = run_cell(shell, "%%llm -o out\nhi")
        assert shell.user_ns["out"] == "Echo: hi"
    assert two[1].chat_requests()[-1]["body"]["model"] == "small"


def test_the_panel_shows_a_chain_default_and_keeps_it(two):
    nbllm.use("lmstudio,llamacpp")
    panel = nbllm.panel()
    try:
        assert panel.wait(10)
        assert panel.provider_select.value == "lmstudio,llamacpp"
        assert nbllm.current().provider == "lmstudio,llamacpp"  # showing it changed nothing
    finally:
        panel.close()


def test_an_endpoint_added_by_api_answers_map_and_compare(two, fake_server):
    nbllm.add_provider("gpu", base_url=fake_server.url + "/v1", save=False)
    assert list(nbllm.map(["a", "b"], "Say {}", provider="gpu")) == ["Echo: Say a", "Echo: Say b"]
    frame = nbllm.compare("hi", providers=["gpu", "gpu:other-model", "llamacpp"])
    assert list(frame["provider"]) == ["gpu", "gpu", "llamacpp"] and frame["error"].isna().all()
    assert list(frame["model"])[:2] == ["fake-model", "other-model"]


def test_an_invalid_typed_answer_stops_the_chain_and_takes_no_server_out(two, make_server, monkeypatch):
    from pydantic import BaseModel

    from nbllm import fleet
    from nbllm.errors import OutputInvalid

    class Person(BaseModel):
        name: str
        age: int

    a, b = two
    a.set(reply='{"name": "Ann"}')  # valid JSON, but no age: invalid twice
    with pytest.raises(OutputInvalid) as caught:
        nbllm.ask("who?", provider="lmstudio,llamacpp", output_type=Person)
    assert caught.value.text == '{"name": "Ann"}' and b.chat_requests() == []
    assert nbllm.ask("who?", provider="lmstudio,llamacpp").provider == "lmstudio"  # not marked down
    servers = [make_server(reply='{"name": "Bo"}') for _ in range(2)]
    monkeypatch.setenv("VLLM_BASE_URL", ",".join(s.url + "/v1" for s in servers))
    monkeypatch.setenv("VLLM_MODEL", "m")
    reset_nbllm()
    with pytest.raises(OutputInvalid):
        nbllm.ask("who?", provider="vllm", output_type=Person)
    assert not any(fleet.is_out(s.url + "/v1") for s in servers)
    assert sum(len(s.chat_requests()) for s in servers) == 2  # the first reply and its one retry
