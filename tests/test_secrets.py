"""Keys never appear in any repr, str, format, error, table, command output or log line.

Two distinctive fake keys are used: one shaped like an OpenAI key, and one that
matches no known key pattern (so masking cannot rely on the shape alone).
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

import nbllm
from nbllm.errors import ModelError
from nbllm.registry import get_registry

SHAPED = "sk-nbllmFAKEkey7Qz93kLmW2xPq"
PLAIN = "plainZebra-Quokka-4471-secret"
KEYS = (SHAPED, PLAIN)


@pytest.fixture
def secrets(monkeypatch, fake_server):
    monkeypatch.setenv("OPENAI_API_KEY", SHAPED)
    monkeypatch.setenv("ANTHROPIC_API_KEY", PLAIN)
    monkeypatch.setenv("LMSTUDIO_API_KEY", PLAIN)  # a local server behind a key
    monkeypatch.setenv("LMSTUDIO_BASE_URL", fake_server.url + "/v1")
    monkeypatch.setenv("NBLLM_HEALTH_TIMEOUT", "0.5")
    nbllm.reinit()
    return fake_server


def assert_clean(*texts: object) -> None:
    for text in texts:
        for key in KEYS:
            assert key not in str(text), f"key leaked into: {str(text)[:200]}"
            assert key[4:-4] not in str(text), f"part of a key leaked into: {str(text)[:200]}"


def test_settings_and_registry(secrets):
    registry = get_registry()
    for name in ("openai", "anthropic", "lmstudio"):
        settings = registry.settings(name)
        assert settings.has_key
        assert_clean(repr(settings), str(settings), f"{settings}", f"{settings!r}", "%s" % (settings,),
                     repr(settings.api_key), f"{settings.api_key:>50}", registry.variables(name))
    assert_clean(repr(registry.global_settings), vars(registry).keys())


def test_health_and_tables(secrets):
    health = nbllm.health_check()
    assert health["lmstudio"].connected and health["openai"].available
    assert_clean(repr(health), [h.as_dict() for h in health.values()])
    from nbllm import tables

    df = nbllm.health_table()
    bundle = tables.display_bundle(df)
    variables = tables.variables_frame()
    assert_clean(df.to_string(), df.to_html(), bundle["text/plain"], bundle["text/html"],
                 variables.to_string(), tables.to_html(variables), variables.to_dict("records"))


def test_local_key_is_sent_to_the_server_but_not_shown(secrets):
    answer = nbllm.ask("hello", provider="lmstudio")
    assert answer.text == "Echo: hello"
    headers = {k.lower(): v for k, v in secrets.chat_requests()[-1]["headers"].items()}
    assert headers["authorization"] == f"Bearer {PLAIN}"  # the key does reach the server it belongs to
    assert_clean(repr(answer), str(answer), answer.metadata())


def test_errors_that_echo_the_key_are_scrubbed(httpx2_mock, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SHAPED)
    monkeypatch.setenv("OPENAI_MAX_RETRIES", "0")
    nbllm.reinit()
    httpx2_mock.post("https://api.openai.com/v1/chat/completions").respond(401, json={"error": {
        "message": f"Incorrect API key provided: {SHAPED}. You can find your API key at ...",
        "type": "invalid_request_error", "code": "invalid_api_key"}})
    with pytest.raises(ModelError) as info:
        nbllm.ask("hi", provider="openai")
    error = info.value
    assert "HTTP 401" in str(error) and "OPENAI_API_KEY" in str(error)
    assert_clean(str(error), repr(error), error.reason, error.args)


def test_plain_shaped_key_echoed_by_a_local_server_is_scrubbed(httpx2_mock, monkeypatch):
    monkeypatch.setenv("LMSTUDIO_API_KEY", PLAIN)
    monkeypatch.setenv("LMSTUDIO_BASE_URL", "http://lms.test:1234/v1")
    monkeypatch.setenv("LMSTUDIO_MAX_RETRIES", "0")
    nbllm.reinit()
    httpx2_mock.post("http://lms.test:1234/v1/chat/completions").respond(
        403, json={"error": {"message": f"key {PLAIN} is not allowed"}})
    with pytest.raises(ModelError) as info:
        nbllm.ask("hi", provider="lmstudio", model="m")
    assert "HTTP 403" in str(info.value)
    assert_clean(str(info.value), repr(info.value))


def test_command_line_output(secrets, capsys):
    from nbllm.cli import main

    outputs = []
    for argv in (["--list"], ["--status"], ["--health-check"], ["--test", "lmstudio"], ["--test", "openai"],
                 ["--list", "--json"], ["--status", "--json"], ["--use", "anthropic"], ["--reinit"]):
        code = main(["providers", *argv])
        captured = capsys.readouterr()
        assert code == 0, (argv, captured.err)
        outputs += [captured.out, captured.err]
    listing = json.loads(main(["providers", "--list", "--json"]) == 0 and capsys.readouterr().out)
    rows = {r["variable"]: r for r in listing["variables"]}
    assert rows["OPENAI_API_KEY"]["set"] and rows["OPENAI_API_KEY"]["value"] == "********"
    assert_clean(*outputs)


def test_magic_output(secrets):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    from nbllm.magics.providers import ProviderMagics

    shell = InteractiveShell.instance()
    shell.register_magics(ProviderMagics)
    for line in ("--list", "--status", "--health-check", "--test lmstudio", "--test openai"):
        with capture_output() as captured:
            shell.run_line_magic("llm_providers", line)
        assert captured.outputs or captured.stdout
        assert_clean(captured.stdout, captured.stderr, [o.data for o in captured.outputs])


def test_logs(secrets, caplog, httpx2_mock):
    httpx2_mock.route(host="127.0.0.1").pass_through()
    httpx2_mock.post("https://api.openai.com/v1/chat/completions").respond(500, json={"error": SHAPED})
    with caplog.at_level(logging.DEBUG):
        nbllm.reinit()
        nbllm.health_check()
        asyncio.run(nbllm.resolve("auto"))
        with pytest.raises(ModelError):
            nbllm.ask("x", provider="openai", max_retries=0)
        nbllm.ask("x", provider="lmstudio")
    assert caplog.records, "something was logged"
    assert_clean(*(r.getMessage() for r in caplog.records), caplog.text)


def test_bad_value_warnings_never_show_a_key(monkeypatch):
    """A key pasted into the wrong variable is still masked in the warning."""
    monkeypatch.setenv("OPENAI_BASE_URL", SHAPED)
    monkeypatch.setenv("ANTHROPIC_API_KEY", PLAIN)
    monkeypatch.setenv("ANTHROPIC_TIMEOUT", PLAIN)
    with pytest.warns(UserWarning) as record:
        nbllm.reinit()
    for variable in ("OPENAI_BASE_URL", "ANTHROPIC_TIMEOUT"):
        assert any(variable in str(w.message) and "***" in str(w.message) for w in record)
    assert_clean(*(str(w.message) for w in record))
