"""config as the one reader of settings: every NBLLM_* variable typed and read from the
environment, then `.env`, then the user config file; bad values, bad `.env` and config
files are one clear warning each; nothing secret shows in a repr."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest

import nbllm
from nbllm import calllog, embedded, replay
from nbllm.catalog import get_spec
from nbllm.config import (
    GLOBALS, NbllmConfigWarning, forget_warnings, global_variable_rows, load_global_settings,
    load_provider_settings, read_environment, read_user_config, user_config_path, validate_user_config,
)
from nbllm.registry import get_registry
from nbllm.settings_values import FALSE_WORDS, TRUE_WORDS

PACKAGE = Path(nbllm.__file__).parent


@pytest.fixture(autouse=True)
def _every_problem_is_new():
    forget_warnings()


def caught_config_warnings(action) -> list[str]:
    """Run `action` and return the NbllmConfigWarning texts it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        action()
    return [str(w.message) for w in caught if issubclass(w.category, NbllmConfigWarning)]


# ---- 1. one reader, every variable typed ---------------------------------------------------


def test_only_config_reads_the_process_environment():
    readers = re.compile(r"os\.environ|environ\.get|getenv\(|from os import environ")
    found = [f"{path.relative_to(PACKAGE)}:{n}" for path in PACKAGE.rglob("*.py") if path.name != "config.py"
             for n, line in enumerate(path.read_text().splitlines(), 1) if readers.search(line)]
    assert found == []


@pytest.mark.parametrize("variable, raw, attr, expected", [
    ("NBLLM_PROVIDER", " Ollama ", "provider", "Ollama"),  # as written: `parse_chain` lowers names, not models
    ("NBLLM_MODEL", " qwen3 ", "model", "qwen3"),
    ("NBLLM_HEALTH_TIMEOUT", "0.25", "health_timeout", 0.25),
    ("NBLLM_LOG", "off", "log", False),
    ("NBLLM_HISTORY", "~/logs/h.sqlite", "history", Path.home() / "logs" / "h.sqlite"),
    ("NBLLM_CACHE", "/tmp/nbllm-c.sqlite", "cache", Path("/tmp/nbllm-c.sqlite")),
    ("NBLLM_CACHE_MODE", "Record", "cache_mode", "record"),
    ("NBLLM_EMBEDDED_MODEL", "/models/m.gguf", "embedded_model", Path("/models/m.gguf")),
    ("NBLLM_EMBEDDED_ARGS", "--n_ctx 4096", "embedded_args", "--n_ctx 4096"),
    ("NBLLM_EMBEDDED_START_TIMEOUT", "90", "embedded_start_timeout", 90.0),
    ("NBLLM_CONFIG", "/tmp/nbllm-x.json", "config", Path("/tmp/nbllm-x.json")),
])
def test_every_nbllm_variable_is_a_typed_field(variable, raw, attr, expected):
    assert variable in GLOBALS
    built = []
    problems = caught_config_warnings(lambda: built.append(load_global_settings({variable: raw},
                                                                                origin={variable: ".env"})))
    (settings,) = built
    assert getattr(settings, attr) == expected and type(getattr(settings, attr)) is type(expected)
    assert settings.value(variable) == expected and settings.sources == {variable: ".env"}
    assert problems == [] and settings.problems == ()
    assert getattr(load_global_settings({}), attr) != expected  # the default is something else


def test_dotenv_reaches_the_call_log_cache_and_embedded_model(tmp_path, monkeypatch):
    for name in ("NBLLM_HISTORY", "NBLLM_CACHE"):  # conftest sets these; .env must speak here
        monkeypatch.delenv(name)
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"gguf")
    (tmp_path / ".env").write_text(
        f"NBLLM_HISTORY={tmp_path / 'from-dotenv.sqlite'}\nNBLLM_CACHE={tmp_path / 'c-dotenv.sqlite'}\n"
        f"NBLLM_CACHE_MODE=record\nNBLLM_LOG=no\nNBLLM_EMBEDDED_MODEL={gguf}\n"
        "NBLLM_EMBEDDED_ARGS=--n_ctx 4096 --threads 1\nNBLLM_EMBEDDED_START_TIMEOUT=75\n"
    )
    nbllm.reinit()
    settings = get_registry().global_settings
    assert settings.sources["NBLLM_HISTORY"] == ".env" and settings.sources["NBLLM_LOG"] == ".env"
    assert calllog.history_path() == tmp_path / "from-dotenv.sqlite"
    assert replay.cache_path() == tmp_path / "c-dotenv.sqlite"
    assert nbllm.cache() == "record" and not nbllm.history.enabled
    assert embedded.model_file() == gguf and embedded._start_timeout() == 75.0
    command = embedded.server_command(gguf, "a", 1, tmp_path / "log")
    assert command[-4:] == ["--n_ctx", "4096", "--threads", "1"]


def test_the_environment_wins_over_dotenv_and_reinit_rereads_both(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("NBLLM_CACHE_MODE=record\nNBLLM_LOG=0\n")
    monkeypatch.setenv("NBLLM_CACHE_MODE", "replay")
    nbllm.reinit()
    assert nbllm.cache() == "replay" and not nbllm.history.enabled
    assert get_registry().global_settings.sources["NBLLM_CACHE_MODE"] == "env"
    (tmp_path / ".env").write_text("NBLLM_LOG=1\n")
    monkeypatch.delenv("NBLLM_CACHE_MODE")
    assert nbllm.cache() == "replay"  # nothing changes until the settings are re-read
    nbllm.reinit()
    assert nbllm.cache() == "off" and nbllm.history.enabled


def test_nbllm_config_in_dotenv_names_the_user_config_file(tmp_path, monkeypatch):
    monkeypatch.delenv("NBLLM_CONFIG")
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({"disabled": ["ollama"], "default": {"provider": "lmstudio", "model": "m"}}))
    (tmp_path / ".env").write_text(f"NBLLM_CONFIG={elsewhere}\n")
    assert user_config_path() == elsewhere
    nbllm.reinit()
    registry = get_registry()
    assert not registry.settings("ollama").enabled and registry.settings("ollama").sources["OLLAMA_ENABLED"] == "config"
    settings = registry.global_settings
    assert (settings.provider, settings.model, settings.config) == ("lmstudio", "m", elsewhere)
    assert {k: v for k, v in settings.sources.items() if k in ("NBLLM_CONFIG", "NBLLM_PROVIDER", "NBLLM_MODEL")} \
        == {"NBLLM_CONFIG": ".env", "NBLLM_PROVIDER": "config", "NBLLM_MODEL": "config"}


# ---- 2. a bad value: one warning in nbllm's words ----------------------------------------------


@pytest.mark.parametrize("variable, value, form, instead", [
    ("OLLAMA_TEMPERATURE", "hot", "expected a number between 0 and 2", "the default 0.7"),
    ("OLLAMA_MAX_TOKENS", "1.5", "expected a whole number between 1 and 1,000,000", "the default 1024"),
    ("OLLAMA_MAX_TOKENS", "many", "expected a whole number between 1 and 1,000,000", "the default 1024"),
    ("OLLAMA_WEIGHT", "3", "expected a number between 0 and 1", "the default 1.0"),
    ("OLLAMA_BASE_URL", "localhost:11434", "expected an http:// or https:// URL", "the default 'http://"),
    ("OLLAMA_BASE_URL", "http://host:port/v1", "expected an http:// or https:// URL", "the default 'http://"),
    ("OLLAMA_ENABLED", "maybe", "expected one of true/false, yes/no, on/off, 1/0", "the default True"),
    ("NBLLM_LOG", "maybe", "expected one of true/false, yes/no, on/off, 1/0", "the default (on)"),
    ("NBLLM_CACHE_MODE", "sometimes", "expected one of record, replay, off", "'off'"),
    ("NBLLM_HEALTH_TIMEOUT", "soon", "expected a number of seconds above 0 and at most 120", "the default 2"),
    ("NBLLM_EMBEDDED_START_TIMEOUT", "-1", "expected a number of seconds above 0", "the default 30"),
    ("NBLLM_EMBEDDED_ARGS", "--alias 'x", "expected options as on a command line", "no extra options"),
    ("NBLLM_HISTORY", "{tmp}", "expected a path to a file, and {tmp} is a directory", "the default file"),
])
def test_a_bad_value_says_variable_value_form_and_replacement(variable, value, form, instead, tmp_path):
    value, form = value.replace("{tmp}", str(tmp_path)), form.replace("{tmp}", str(tmp_path))
    env = {variable: value}
    warned = caught_config_warnings(lambda: (load_provider_settings(get_spec("ollama"), env),
                                             load_global_settings(env)))
    assert len(warned) == 1, warned
    (message,) = warned
    assert message.startswith(f"nbllm: {variable}={value!r} is not valid: {form}") and f"using {instead}" in message
    for python_words in ("could not convert", "invalid literal", "Error", "ValueError", "base 10"):
        assert python_words not in message


def test_a_bad_value_warns_once_per_process_however_often_it_is_read(local_provider, monkeypatch):
    monkeypatch.setenv("NBLLM_CACHE_MODE", "always")
    monkeypatch.setenv("NBLLM_LOG", "perhaps")

    def many_reads() -> None:
        get_registry()
        for _ in range(3):
            nbllm.cache(), nbllm.history.enabled, nbllm.ask("x")  # noqa: B018
            load_global_settings({"NBLLM_LOG": "perhaps"})
            get_registry().settings("lmstudio")

    warned = caught_config_warnings(many_reads)
    assert sorted(w.split("=")[0] for w in warned) == ["nbllm: NBLLM_CACHE_MODE", "nbllm: NBLLM_LOG"]
    assert get_registry().global_settings.problems == tuple(warned)  # kept for --list
    assert nbllm.cache() == "off" and nbllm.history.enabled  # the defaults are in force
    assert len(caught_config_warnings(lambda: load_global_settings({"NBLLM_LOG": "never"}))) == 1  # another value


def test_a_key_given_as_a_bad_value_is_masked(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "plainAnthropicKey77")
    monkeypatch.setenv("NBLLM_HEALTH_TIMEOUT", "plainAnthropicKey77")
    monkeypatch.setenv("NBLLM_LOG", "sk-keyShapedValue12345")
    warned = caught_config_warnings(nbllm.reinit)
    assert len(warned) == 2 and all("NBLLM_" in w and "***" in w for w in warned)
    assert not [w for w in warned if "plainAnthropicKey" in w or "keyShapedValue" in w]


def test_an_ollama_host_with_a_bad_port_is_a_warning_not_a_crash():
    env = {"OLLAMA_HOST": "gpu-box:eleven"}
    built = []
    warned = caught_config_warnings(lambda: built.append(load_provider_settings(get_spec("ollama"), env)))
    assert warned == ["nbllm: OLLAMA_HOST='gpu-box:eleven' is not valid: expected a host, host:port or an http:// "
                      "URL, such as 127.0.0.1:11434; using the default 'http://localhost:11434'."]
    assert built[0].base_url == "http://localhost:11434" and built[0].base_url_is_default


# ---- 3. one boolean parser ---------------------------------------------------------------------


@pytest.mark.parametrize("word", [*TRUE_WORDS, *FALSE_WORDS, "TRUE", " Off "])
def test_every_boolean_accepts_the_same_words(word):
    expected = word.strip().lower() in TRUE_WORDS
    assert load_global_settings({"NBLLM_LOG": word}).log is expected
    assert load_provider_settings(get_spec("ollama"), {"OLLAMA_ENABLED": word}).enabled is expected


def test_nbllm_log_maybe_warns_and_logging_stays_on(local_provider, monkeypatch):
    monkeypatch.setenv("NBLLM_LOG", "maybe")
    warned = caught_config_warnings(lambda: nbllm.ask("still logged"))
    assert len(warned) == 1 and "NBLLM_LOG='maybe'" in warned[0] and "true/false" in warned[0]
    assert list(nbllm.history()["prompt"]) == ["still logged"]


# ---- 4. a .env that is not UTF-8 ---------------------------------------------------------------


def test_a_dotenv_that_is_not_utf8_is_one_warning_and_ignored(local_provider, tmp_path, monkeypatch):
    (tmp_path / ".env").write_bytes(b"LMSTUDIO_MODEL=from-dotenv\nNOTE=caf\xff\n")
    monkeypatch.setenv("LMSTUDIO_TEMPERATURE", "0.1")

    def calls() -> None:
        for _ in range(2):
            assert nbllm.ask("works").text == "Echo: works"
        nbllm.health_check(["lmstudio"])

    warned = caught_config_warnings(calls)
    assert warned == [f"nbllm: the .env file {(tmp_path / '.env').resolve()} is not UTF-8 text (byte 0xff at position 35); "
                      "ignoring it — save it as UTF-8."]
    settings = get_registry().settings("lmstudio")
    assert settings.model_is_default and settings.temperature == 0.1  # .env ignored, the environment used
    assert warned[0] in get_registry().global_settings.problems


def test_a_dotenv_with_a_byte_order_mark_is_read(tmp_path):
    (tmp_path / ".env").write_bytes(b"\xef\xbb\xbfLMSTUDIO_MODEL=bom-model\n")
    assert caught_config_warnings(nbllm.reinit) == []
    assert get_registry().settings("lmstudio").model == "bom-model"
    (tmp_path / ".env").write_bytes(b"\xef\xbb\xbfA=\xfe\n")
    (warned,) = caught_config_warnings(nbllm.reinit)
    assert "(byte 0xfe at position 5)" in warned


# ---- 5. a hand-edited user config file -------------------------------------------------------


@pytest.mark.parametrize("content, mentions, disabled, default", [
    ({"disabled": "lmstudio", "default": "ollama"},
     ['"disabled" is the text "lmstudio"', '"default" is the text "ollama"', '{"provider": name'], [], None),
    ({"disabled": [1, None, "Ollama"]}, ['"disabled" holds the number 1, null'], ["ollama"], None),
    ({"default": {"provider": 3}, "disabled": ["llamacpp"]}, ['"default"."provider" is the number 3'],
     ["llamacpp"], None),
    ({"default": {"provider": "ollama", "model": 5}}, ['"default"."model" is the number 5'], [], ("ollama", None)),
    ([1, 2], ["holds a list, where an object", '"disabled": [provider names]'], [], None),
    (7, ["holds the number 7"], [], None),
    ("{broken", ["unreadable config file", "not valid JSON (line 1, column 2)"], [], None),
])
def test_a_config_file_of_the_wrong_shape_is_one_warning(content, mentions, disabled, default):
    path = user_config_path()
    path.write_text(content if isinstance(content, str) else json.dumps(content))

    def use_it() -> None:
        nbllm.reinit()
        nbllm.current()
        read_user_config()
        nbllm.health_check(["lmstudio"])

    warned = caught_config_warnings(use_it)
    assert len(warned) == 1, warned
    assert str(path) in warned[0] and all(m in warned[0] for m in mentions), warned[0]
    registry = get_registry()
    assert [n for n in ("lmstudio", "ollama", "llamacpp") if not registry.settings(n).enabled] == disabled
    current = nbllm.current()
    assert ((current.provider, current.model) if default else current.provider) == (default or "auto")


def test_a_config_file_that_is_not_utf8_never_breaks_a_call(local_provider):
    data = b'{"disabled": ["caf\xe9"]}'
    user_config_path().write_bytes(data)
    warned = caught_config_warnings(lambda: nbllm.ask("fine"))
    assert len(warned) == 1 and str(user_config_path()) in warned[0]
    assert f"is not UTF-8 text (byte 0xe9 at position {data.index(0xe9)}); ignoring it" in warned[0]


def test_unknown_keys_are_kept_and_a_save_repairs_the_bad_entries():
    path = user_config_path()
    path.write_text(json.dumps({"disabled": ["ollama", 4], "future": {"x": [1]}, "default": "nope"}))
    assert validate_user_config(json.loads(path.read_text()), path)[0] == {"disabled": ["ollama"],
                                                                            "future": {"x": [1]}}
    caught_config_warnings(lambda: nbllm.disable("lmstudio", save=True))
    assert json.loads(path.read_text()) == {"disabled": ["lmstudio", "ollama"], "future": {"x": [1]}}
    assert caught_config_warnings(nbllm.reinit) == []


# ---- 6. no password or key in a repr ---------------------------------------------------------


def test_settings_reprs_hide_url_passwords_and_keys(monkeypatch):
    monkeypatch.setenv("LMSTUDIO_BASE_URL", "http://user:s3cret@host:1234/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "plainOpenaiKey42")
    monkeypatch.setenv("LMSTUDIO_MODEL", "plainOpenaiKey42")  # pasted in the wrong place
    monkeypatch.setenv("NBLLM_MODEL", "plainOpenaiKey42")
    monkeypatch.setenv("NBLLM_EMBEDDED_ARGS", "--api_key otherSecret99 --n_ctx 512")
    nbllm.reinit()
    registry = get_registry()
    settings = registry.settings("lmstudio")
    assert settings.base_url == "http://user:s3cret@host:1234/v1"  # requests keep the real URL
    texts = [repr(settings), str(settings), f"{settings}", repr(registry.settings("openai")),
             repr(registry.global_settings), str(registry.global_settings),
             str(global_variable_rows(registry.global_settings, read_environment()[0])),
             str(registry.variables("lmstudio"))]
    for text in texts:
        assert "s3cret" not in text and "plainOpenaiKey42" not in text and "otherSecret99" not in text, text
    assert "http://host:1234/v1" in repr(settings) and "--n_ctx 512" in repr(registry.global_settings)


# ---- 7. rows for --list -----------------------------------------------------------------------


def test_global_variable_rows_for_the_list(tmp_path, monkeypatch):
    nbllm.use("ollama", "qwen3", save=True)
    (tmp_path / ".env").write_text("NBLLM_CACHE_MODE=record\n")
    monkeypatch.setenv("NBLLM_EMBEDDED_ARGS", "--api-key=hidden-value-1 --n_ctx 1024")
    monkeypatch.setenv("NBLLM_HEALTH_TIMEOUT", "http://u:pw123@h/x")
    caught_config_warnings(nbllm.reinit)
    registry = get_registry()
    rows = {row["variable"]: row for row in global_variable_rows(registry.global_settings, read_environment()[0])}
    assert list(rows) == list(GLOBALS)
    assert all(set(row) == set(registry.variables("ollama")[0]) and row["provider"] == "nbllm" for row in rows.values())
    assert rows["NBLLM_CACHE_MODE"] == {"provider": "nbllm", "variable": "NBLLM_CACHE_MODE", "set": True,
                                        "source": ".env", "value": "record"}
    assert rows["NBLLM_HISTORY"]["value"] == str(tmp_path / "history.sqlite") and rows["NBLLM_HISTORY"]["set"]
    assert (rows["NBLLM_PROVIDER"]["source"], rows["NBLLM_PROVIDER"]["value"]) == ("config", "ollama")
    assert (rows["NBLLM_MODEL"]["source"], rows["NBLLM_MODEL"]["value"]) == ("config", "qwen3")
    assert rows["NBLLM_LOG"] == {"provider": "nbllm", "variable": "NBLLM_LOG", "set": False, "source": "",
                                 "value": ""}
    assert "hidden-value-1" not in rows["NBLLM_EMBEDDED_ARGS"]["value"] and "--n_ctx 1024" in \
        rows["NBLLM_EMBEDDED_ARGS"]["value"]
    assert "pw123" not in rows["NBLLM_HEALTH_TIMEOUT"]["value"]
