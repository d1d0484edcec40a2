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
    expected = {  # option → (what the message says, what the table shows; None: no table)
        "--list": ("user config file:", "OPENAI_API_KEY"),
        "--status": ("default: auto", "lmstudio"),
        "--health-check": ("providers:", "fake-model"),
        "--test lmstudio": ("lmstudio: answering at", "fake-model"),
        "--test openai": ("openai: configured (key set", None),
    }
    for line, (message, cell) in expected.items():
        with capture_output() as captured:
            shell.run_line_magic("llm_providers", line)
        assert message in captured.stdout, (line, captured.stdout, captured.stderr)
        assert captured.stderr == "", (line, captured.stderr)
        if cell is None:
            assert captured.outputs == [], line
        else:
            output = captured.outputs[0]  # --list shows more tables after the providers' (all checked below)
            assert cell in output.data["text/plain"] and "<table" in output.data["text/html"], line
            assert cell in output.data["text/html"], line
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


def test_a_key_pasted_into_another_providers_variable_is_masked(monkeypatch):
    """The warning and `--list` mask every key in the environment, not only the provider's own."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", PLAIN)
    monkeypatch.setenv("OPENAI_TIMEOUT", PLAIN)  # Anthropic's key, in OpenAI's variable
    monkeypatch.setenv("SOMETOOL_API_KEY", "otherToolKey-Walrus-9931")  # not a provider of ours
    monkeypatch.setenv("GEMINI_MODEL", "otherToolKey-Walrus-9931")
    with pytest.warns(UserWarning) as record:
        nbllm.reinit()
    messages = [str(w.message) for w in record]
    assert any("OPENAI_TIMEOUT" in m and "***" in m for m in messages), messages
    assert_clean(*messages)
    rows = {r["variable"]: r for r in get_registry().variables("openai") + get_registry().variables("gemini")}
    assert rows["OPENAI_TIMEOUT"]["set"] and rows["OPENAI_TIMEOUT"]["value"] == "***"
    assert rows["GEMINI_MODEL"]["value"] == "***"
    assert "Walrus" not in json.dumps(rows)


# ---- a base URL that carries user:password@ -----------------------------------------

PASSWORD = "pw-Narwhal-8812"


def assert_no_password(*texts: object) -> None:
    for text in texts:
        assert PASSWORD not in str(text), f"URL password leaked into: {str(text)[:300]}"
        assert "bob:" not in str(text), f"URL user leaked into: {str(text)[:300]}"


def _with_credentials(url: str) -> str:
    return url.replace("http://", f"http://bob:{PASSWORD}@", 1)


@pytest.fixture
def credentials_url(monkeypatch, fake_server):
    monkeypatch.setenv("LMSTUDIO_BASE_URL", _with_credentials(fake_server.url) + "/v1")
    monkeypatch.setenv("LMSTUDIO_MAX_RETRIES", "0")
    monkeypatch.setenv("LMSTUDIO_TIMEOUT", "2")
    monkeypatch.setenv("NBLLM_HEALTH_TIMEOUT", "0.5")
    nbllm.reinit()
    return fake_server


def test_url_password_is_sent_but_kept_out_of_results(credentials_url):
    answer = nbllm.ask("hello", provider="lmstudio", model="fake-model")
    assert answer.text == "Echo: hello"
    assert get_registry().settings("lmstudio").base_url.startswith(f"http://bob:{PASSWORD}@")  # requests use it
    health = nbllm.health_check(["lmstudio"])["lmstudio"]
    assert health.connected and health.base_url == credentials_url.url + "/v1"
    assert_no_password(repr(health), health.as_dict(), repr(answer), answer.metadata())


def test_url_password_never_in_errors_of_a_refused_connection(monkeypatch):
    closed = get_registry().settings("ollama").base_url  # conftest points it at a closed port
    monkeypatch.setenv("LMSTUDIO_BASE_URL", _with_credentials(closed) + "/v1")
    monkeypatch.setenv("LMSTUDIO_MAX_RETRIES", "0")
    monkeypatch.setenv("NBLLM_HEALTH_TIMEOUT", "0.5")
    nbllm.reinit()
    with pytest.raises(ModelError) as info:
        nbllm.ask("hi", provider="lmstudio", model="m")
    error = info.value
    assert "connection" in str(error) and closed in str(error)
    health = nbllm.health_check(["lmstudio"])["lmstudio"]
    assert health.connected is False and "refused" in health.error and closed in health.error
    with pytest.raises(ModelError) as tested:
        asyncio.run(nbllm.resolve("lmstudio", test_connection=True))
    assert_no_password(str(error), repr(error), error.url, error.args, repr(health), health.error,
                       str(tested.value), tested.value.url)


def test_url_password_never_in_errors_of_an_http_500(credentials_url):
    credentials_url.set(mode="error", status=500)
    with pytest.raises(ModelError) as info:
        nbllm.ask("hi", provider="lmstudio", model="fake-model")
    assert "HTTP 500" in str(info.value)
    health = nbllm.health_check(["lmstudio"])["lmstudio"]
    assert health.connected is False and "HTTP 500" in health.error
    assert_no_password(str(info.value), repr(info.value), info.value.url, repr(health), health.as_dict())


def test_url_password_never_in_tables_listing_cli_or_panel(credentials_url, capsys):
    from nbllm import tables
    from nbllm.cli import main

    health = nbllm.health_check()
    bundles = [tables.display_bundle(tables.health_frame(health, columns))
               for columns in (tables.HEALTH_COLUMNS, tables.STATUS_COLUMNS, tables.HEALTH_TABLE_COLUMNS)]
    assert all(credentials_url.url in b["text/plain"] and credentials_url.url in b["text/html"] for b in bundles)
    rows = {r["variable"]: r for r in get_registry().variables("lmstudio")}
    assert rows["LMSTUDIO_BASE_URL"]["value"] == credentials_url.url + "/v1"
    assert_no_password(bundles, tables.to_html(tables.variables_frame()), rows)
    outputs = []
    for argv in (["--list"], ["--status"], ["--health-check"], ["--test", "lmstudio"], ["--status", "--json"]):
        main(["providers", *argv])
        captured = capsys.readouterr()
        outputs += [captured.out, captured.err]
    assert any(credentials_url.url in out for out in outputs)
    assert_no_password(*outputs)

    panel = nbllm.panel()
    try:
        assert panel.wait(10.0)
        assert credentials_url.url in panel.table.value
        assert_no_password(panel.table.value, panel.default_line.value)
    finally:
        panel.close()


# ---- HTML in a server's answers is shown as text ------------------------------------

SCRIPT = "<script>alert(1)</script>"


def test_html_in_model_names_and_errors_is_escaped(make_server, monkeypatch):
    from nbllm import tables
    from nbllm.health import ProviderHealth

    server = make_server(models=[SCRIPT, "<img src=x onerror=alert(1)>"], loaded=SCRIPT)
    monkeypatch.setenv("OLLAMA_BASE_URL", server.url)
    monkeypatch.setenv("NBLLM_HEALTH_TIMEOUT", "1")
    nbllm.reinit()
    df = nbllm.health_table()
    assert df.loc["ollama", "model"] == SCRIPT  # the data keeps the real name
    bad = {"x": ProviderHealth("x", True, False, model_id="m", error=f"server said {SCRIPT}")}
    for frame in (df, tables.health_frame(bad)):
        body = tables.to_html(frame)
        assert "<script>" not in body and "<img" not in body
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "&lt;img src=x onerror=alert(1)&gt;" in tables.to_html(df)
