"""Environment configuration: conversions, bad values (one warning, never an exception),
`.env` files, OLLAMA_HOST forms and the usual key names."""

from __future__ import annotations

import pickle
import warnings

import pytest

import nbllm
from nbllm.catalog import get_spec
from nbllm.config import (
    NbllmConfigWarning, ProviderSettings, Secret, forget_warnings, load_global_settings, load_provider_settings,
)
from nbllm.registry import get_registry


@pytest.fixture(autouse=True)
def _every_problem_is_new():
    """A bad value warns once per process; each test here starts as a new process would."""
    forget_warnings()


def settings_for(provider: str, **env: str) -> tuple[ProviderSettings, list[str]]:
    """Settings built from exactly `env`, with every warning they raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        settings = load_provider_settings(get_spec(provider), env)
    return settings, [str(w.message) for w in caught if issubclass(w.category, NbllmConfigWarning)]


def test_defaults_when_nothing_is_set():
    settings, problems = settings_for("openai")
    assert problems == []
    assert (settings.enabled, settings.weight, settings.max_tokens, settings.temperature) == (True, 1.0, 1024, 0.7)
    assert (settings.timeout, settings.max_retries) == (30.0, 3)
    assert settings.model == "gpt-5-mini" and settings.model_is_default
    assert settings.base_url == "https://api.openai.com/v1" and settings.base_url_is_default
    assert settings.api_key is None and not settings.has_key


def test_good_values_are_converted_to_their_types():
    settings, problems = settings_for(
        "lmstudio", LMSTUDIO_ENABLED="no", LMSTUDIO_MODEL=" qwen3-8b ", LMSTUDIO_WEIGHT="0.25",
        LMSTUDIO_MAX_TOKENS="2048", LMSTUDIO_TEMPERATURE="1.5", LMSTUDIO_TIMEOUT="2.5",
        LMSTUDIO_MAX_RETRIES="0", LMSTUDIO_BASE_URL="http://gpu-box:1234/v1/",
    )
    assert problems == []
    assert settings.enabled is False
    assert settings.model == "qwen3-8b" and not settings.model_is_default
    assert settings.weight == 0.25 and isinstance(settings.weight, float)
    assert settings.max_tokens == 2048 and isinstance(settings.max_tokens, int)
    assert settings.temperature == 1.5 and settings.timeout == 2.5 and settings.max_retries == 0
    assert settings.base_url == "http://gpu-box:1234/v1" and not settings.base_url_is_default
    assert settings.sources["LMSTUDIO_MODEL"] == "env"


@pytest.mark.parametrize("text, expected", [
    ("1", True), ("true", True), ("TRUE", True), ("yes", True), ("on", True), (" Y ", True),
    ("0", False), ("false", False), ("No", False), ("off", False), ("n", False),
])
def test_booleans(text, expected):
    settings, problems = settings_for("ollama", OLLAMA_ENABLED=text)
    assert settings.enabled is expected and problems == []


@pytest.mark.parametrize("variable, value, default", [
    ("GROK_ENABLED", "maybe", "True"),
    ("GROK_WEIGHT", "1.5", "1.0"),
    ("GROK_WEIGHT", "-0.1", "1.0"),
    ("GROK_WEIGHT", "heavy", "1.0"),
    ("GROK_MAX_TOKENS", "0", "1024"),
    ("GROK_MAX_TOKENS", "1.5", "1024"),
    ("GROK_MAX_TOKENS", "lots", "1024"),
    ("GROK_TEMPERATURE", "2.5", "0.7"),
    ("GROK_TEMPERATURE", "nan", "0.7"),
    ("GROK_TEMPERATURE", "inf", "0.7"),
    ("GROK_TIMEOUT", "-1", "30.0"),
    ("GROK_TIMEOUT", "NaN", "30.0"),
    ("GROK_TIMEOUT", "Infinity", "30.0"),
    ("GROK_MAX_RETRIES", "-1", "3"),
    ("GROK_MAX_RETRIES", "three", "3"),
    ("GROK_BASE_URL", "api.x.ai/v1", "'https://api.x.ai/v1'"),
    ("GROK_BASE_URL", "ftp://api.x.ai", "'https://api.x.ai/v1'"),
])
def test_bad_value_is_one_warning_naming_variable_value_and_default(variable, value, default):
    settings, problems = settings_for("grok", **{variable: value})
    assert len(problems) == 1, problems
    message = problems[0]
    assert variable in message and repr(value) in message and f"default {default}" in message
    assert settings.problems == (message,)
    attr = variable.removeprefix("GROK_").lower()
    assert getattr(settings, attr) == getattr(settings_for("grok")[0], attr)  # the default is in force


def test_several_bad_values_each_warn_once_and_good_ones_still_apply():
    settings, problems = settings_for("ollama", OLLAMA_TEMPERATURE="hot", OLLAMA_MAX_TOKENS="-5", OLLAMA_WEIGHT="0.5")
    assert len(problems) == 2
    assert any("OLLAMA_TEMPERATURE" in p for p in problems) and any("OLLAMA_MAX_TOKENS" in p for p in problems)
    assert settings.weight == 0.5 and settings.temperature == 0.7 and settings.max_tokens == 1024


def test_bad_values_in_the_process_environment_never_raise(monkeypatch):
    monkeypatch.setenv("OPENAI_TEMPERATURE", "very")
    monkeypatch.setenv("OPENAI_MAX_RETRIES", "1e9")
    monkeypatch.setenv("NBLLM_HEALTH_TIMEOUT", "nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        get_registry()  # a kernel's registry exists before anyone re-reads the environment
    with pytest.warns(NbllmConfigWarning) as record:
        nbllm.reinit()
    texts = [str(w.message) for w in record]
    assert sum("OPENAI_TEMPERATURE" in t for t in texts) == 1
    assert sum("NBLLM_HEALTH_TIMEOUT" in t for t in texts) == 1
    registry = get_registry()
    assert registry.settings("openai").temperature == 0.7 and registry.health_timeout == 2.0


def test_blank_values_mean_unset():
    settings, problems = settings_for("openai", OPENAI_TEMPERATURE="  ", OPENAI_API_KEY="   ", OPENAI_MODEL="")
    assert problems == [] and settings.temperature == 0.7 and not settings.has_key and settings.model_is_default


@pytest.mark.parametrize("raw, ok", [("0.5", 0.5), ("120", 120.0), ("0", None), ("-1", None), ("inf", None),
                                     ("nan", None), ("soon", None)])
def test_health_timeout(raw, ok):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        settings = load_global_settings({"NBLLM_HEALTH_TIMEOUT": raw})
    if ok is None:
        assert settings.health_timeout == 2.0 and len(caught) == 1
        assert "NBLLM_HEALTH_TIMEOUT" in str(caught[0].message) and repr(raw) in str(caught[0].message)
    else:
        assert settings.health_timeout == ok and caught == []


def test_nbllm_provider_sets_the_initial_default(monkeypatch):
    monkeypatch.setenv("NBLLM_PROVIDER", "Ollama")
    monkeypatch.setenv("NBLLM_MODEL", "qwen3")
    nbllm.reinit()
    from nbllm import session

    session.reset_default()
    assert nbllm.current().provider == "ollama" and nbllm.current().model == "qwen3"


def test_initial_default_is_auto():
    assert nbllm.current().provider == "auto"


@pytest.mark.parametrize("env, bad", [
    ({"NBLLM_PROVIDER": "bogus"}, "'bogus'"),
    ({"NBLLM_PROVIDER": "ollama", "OLLAMA_ENABLED": "false"}, "'ollama'"),
])
def test_unknown_or_disabled_nbllm_provider_warns_once_and_falls_back_to_auto(monkeypatch, env, bad):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nbllm.reinit()
        first, second = nbllm.current(), nbllm.current()
    messages = [str(w.message) for w in caught if issubclass(w.category, NbllmConfigWarning)]
    assert first.provider == second.provider == "auto"
    assert len(messages) == 1, messages
    assert "NBLLM_PROVIDER" in messages[0] and bad in messages[0] and "auto" in messages[0]
    assert "openai" in messages[0] and "lmstudio" in messages[0]  # the valid choices
    assert ("ollama" in messages[0].split(bad, 1)[1]) == ("OLLAMA_ENABLED" not in env)


def test_a_saved_default_that_is_now_disabled_falls_back_to_auto(monkeypatch):
    from nbllm.config import write_user_config

    write_user_config({"default": {"provider": "llamacpp", "model": "m"}})
    monkeypatch.setenv("LLAMACPP_ENABLED", "no")
    with pytest.warns(NbllmConfigWarning, match="the saved default 'llamacpp' names a disabled provider"):
        assert nbllm.current().provider == "auto"


def test_a_valid_nbllm_provider_does_not_warn(monkeypatch):
    monkeypatch.setenv("NBLLM_PROVIDER", "lmstudio")
    nbllm.reinit()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert nbllm.current().provider == "lmstudio"


def test_update_of_model_or_base_url_is_what_a_local_provider_then_uses(make_server):
    """`update(model=)` wins over the model the server reports; `update(base_url=)` is the only address."""
    from nbllm import bridge, routing

    server = make_server(models=["served-a", "served-b"], loaded="served-a")
    registry = get_registry()
    registry.update("ollama", base_url=server.url)
    assert bridge.run(routing.choose("ollama")).model == "served-a"  # detected: the model is the default
    registry.update("ollama", model="served-b")
    settings = registry.settings("ollama")
    assert not settings.model_is_default and not settings.base_url_is_default
    assert bridge.run(routing.choose("ollama")).model == "served-b"
    assert nbllm.health_check(["ollama"])["ollama"].model_id == "served-b"
    registry.update("ollama", model="served-b")  # the same value again changes nothing
    assert not registry.settings("ollama").model_is_default


# ---- API keys and their usual names ------------------------------------------------


@pytest.mark.parametrize("provider, env, expected", [
    ("openai", {"OPENAI_API_KEY": "k-openai"}, "k-openai"),
    ("anthropic", {"ANTHROPIC_API_KEY": "k-anthropic"}, "k-anthropic"),
    ("gemini", {"GEMINI_API_KEY": "k-gemini"}, "k-gemini"),
    ("gemini", {"GOOGLE_API_KEY": "k-google"}, "k-google"),
    ("gemini", {"GEMINI_API_KEY": "k-gemini", "GOOGLE_API_KEY": "k-google"}, "k-gemini"),
    ("grok", {"XAI_API_KEY": "k-xai"}, "k-xai"),
    ("grok", {"GROK_API_KEY": "k-grok"}, "k-grok"),
    ("grok", {"GROK_API_KEY": "k-grok", "XAI_API_KEY": "k-xai"}, "k-grok"),
    ("lmstudio", {"LMSTUDIO_API_KEY": "k-lms"}, "k-lms"),
])
def test_key_names(provider, env, expected):
    settings, problems = settings_for(provider, **env)
    assert settings.api_key.get() == expected and settings.has_key and problems == []


def test_cloud_provider_without_key_is_not_configured_not_an_error():
    registry = get_registry()
    for name in ("openai", "anthropic", "gemini", "grok"):
        assert not registry.is_configured(name)
    assert registry.is_configured("ollama")  # local servers need no key
    health = nbllm.health_check(["anthropic"])["anthropic"]
    assert health.status == "not configured" and "ANTHROPIC_API_KEY" in health.error


# ---- OLLAMA_HOST -----------------------------------------------------------------------


@pytest.mark.parametrize("host, url", [
    ("0.0.0.0", "http://localhost:11434"),
    ("127.0.0.1", "http://127.0.0.1:11434"),
    ("gpu-box:11500", "http://gpu-box:11500"),
    ("http://gpu-box", "http://gpu-box:11434"),
    ("https://ollama.example.com:443", "https://ollama.example.com:443"),
    ("0.0.0.0:9999", "http://localhost:9999"),
    ("[::1]:11435", "http://[::1]:11435"),
])
def test_ollama_host_forms(host, url):
    settings, problems = settings_for("ollama", OLLAMA_HOST=host)
    assert settings.base_url == url and not settings.base_url_is_default and problems == []
    assert settings.sources["OLLAMA_HOST"] == "env"


def test_ollama_base_url_wins_over_ollama_host():
    settings, _ = settings_for("ollama", OLLAMA_HOST="gpu-box:11500", OLLAMA_BASE_URL="http://other:1")
    assert settings.base_url == "http://other:1"


# ---- .env ------------------------------------------------------------------------------------


def test_dotenv_file_is_read_and_real_environment_wins(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text(
        "OPENAI_API_KEY=k-from-dotenv\nOPENAI_MODEL=from-dotenv\nOLLAMA_MODEL=dotenv-model\n# a comment\n"
    )
    monkeypatch.setenv("OLLAMA_MODEL", "env-model")
    nbllm.reinit()
    registry = get_registry()
    openai = registry.settings("openai")
    assert openai.api_key.get() == "k-from-dotenv" and openai.model == "from-dotenv"
    assert openai.sources["OPENAI_API_KEY"] == ".env"
    ollama = registry.settings("ollama")
    assert ollama.model == "env-model" and ollama.sources["OLLAMA_MODEL"] == "env"


def test_reinit_rereads_dotenv(tmp_path):
    assert not get_registry().settings("anthropic").has_key
    (tmp_path / ".env").write_text("ANTHROPIC_API_KEY=k-later\n")
    assert not get_registry().settings("anthropic").has_key  # nothing changes until reinit
    nbllm.reinit()
    assert get_registry().settings("anthropic").api_key.get() == "k-later"


def test_bad_value_in_dotenv_warns_and_names_it(tmp_path):
    (tmp_path / ".env").write_text("GEMINI_TEMPERATURE=warm\n")
    with pytest.warns(NbllmConfigWarning, match="GEMINI_TEMPERATURE='warm'"):
        nbllm.reinit()
    assert get_registry().settings("gemini").sources["GEMINI_TEMPERATURE"] == ".env"


# ---- Secret ------------------------------------------------------------------------------------


def test_a_bad_value_is_masked_with_every_key_in_the_environment():
    env = {"ANTHROPIC_API_KEY": "anthropicKey-Plain-7731", "OPENAI_TIMEOUT": "anthropicKey-Plain-7731",
           "OPENAI_MAX_TOKENS": "sk-someKeyShaped123456", "OTHER_API_KEY": "otherKey-Plain-2290",
           "OPENAI_TEMPERATURE": "otherKey-Plain-2290"}
    settings, warned = settings_for("openai", **env)
    assert len(warned) == 3 and settings.problems == tuple(warned)
    assert all("***" in w for w in warned)
    assert not [w for w in warned if "Plain" in w or "someKeyShaped" in w]


def test_secret_never_shows_its_value():
    secret = Secret("k-very-private-123")
    for text in (repr(secret), str(secret), f"{secret}", f"{secret!r}", f"{secret:>40}", "%s" % secret):
        assert "k-very-private-123" not in text and "*" in text
    assert secret.get() == "k-very-private-123"
    assert secret == Secret("k-very-private-123") and secret != Secret("other") and bool(secret)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(secret)
    settings, _ = settings_for("openai", OPENAI_API_KEY="k-very-private-123")
    assert "k-very-private-123" not in repr(settings) and "k-very-private-123" not in str(settings)
