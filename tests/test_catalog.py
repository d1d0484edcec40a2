"""The catalog: seven providers of one shape, plug-ins through the same door."""

from __future__ import annotations

import importlib.metadata  # (before a test narrows sys.path)
import logging
import sys

import pytest

import nbllm
from nbllm import catalog
from nbllm.catalog import ProviderSpec, get_spec, provider_names, register_provider
from nbllm.errors import ConfigurationError

BUILT_INS = ["openai", "anthropic", "gemini", "grok", "lmstudio", "ollama", "llamacpp"]


@pytest.fixture
def restore_catalog(monkeypatch):
    """Plug-ins registered by a test are removed afterwards."""
    monkeypatch.setattr(catalog, "_REGISTRY", dict(catalog._REGISTRY))
    yield


def test_built_in_providers_in_order():
    assert provider_names()[:7] == BUILT_INS
    assert nbllm.providers()[:7] == BUILT_INS


@pytest.mark.parametrize("name", BUILT_INS)
def test_every_spec_has_a_default_model_and_url(name):
    spec = get_spec(name)
    assert spec.default_model.strip() and spec.base_url.startswith(("http://", "https://"))
    assert spec.kind == ("cloud" if name in BUILT_INS[:4] else "local")
    assert spec.needs_key == (spec.kind == "cloud")
    assert spec.env_prefix == name.upper()


def test_local_defaults_match_the_servers():
    assert get_spec("lmstudio").base_url == "http://localhost:1234/v1"
    assert get_spec("ollama").base_url == "http://localhost:11434" and get_spec("ollama").host_env == "OLLAMA_HOST"
    llamacpp = get_spec("llamacpp")
    assert llamacpp.base_url == "http://localhost:8080" and "http://localhost:9931" in llamacpp.alt_base_urls
    priorities = [get_spec(n).auto_priority for n in ("lmstudio", "ollama", "llamacpp")]
    assert priorities == sorted(priorities)


def test_names_are_case_and_space_insensitive():
    assert get_spec(" LMStudio ").name == "lmstudio"


@pytest.mark.parametrize("bad", ["nope", "", "open ai"])
def test_unknown_name_lists_valid_ones(bad):
    with pytest.raises(ConfigurationError) as info:
        get_spec(bad)
    message = str(info.value)
    assert "Invalid LLM provider" in message
    assert all(name in message for name in [*BUILT_INS, "auto"])


@pytest.mark.parametrize("name", ["auto", "Upper", "has space", "9lives"])
def test_register_rejects_bad_names(name, restore_catalog):
    with pytest.raises(ConfigurationError, match="Invalid provider name"):
        register_provider(ProviderSpec(name=name, label="x", kind="local", default_model="m", base_url="http://x"))


def test_register_rejects_duplicates_unless_replacing(restore_catalog):
    spec = ProviderSpec(name="openai", label="Other", kind="cloud", default_model="m", base_url="http://x")
    with pytest.raises(ConfigurationError, match="already registered"):
        register_provider(spec)
    register_provider(spec, replace=True)
    assert get_spec("openai").label == "Other"


def test_plug_in_provider_joins_health_and_factory(restore_catalog, monkeypatch):
    register_provider(ProviderSpec(name="sglang", label="SGLang", kind="local", default_model="served",
                                   base_url="http://127.0.0.1:9/v1", probe="openai"))
    monkeypatch.setenv("SGLANG_BASE_URL", "http://127.0.0.1:9/v1")
    nbllm.reinit()
    health = nbllm.health_check(timeout=0.5)
    assert list(health)[-1] == "sglang" and health["sglang"].connected is False
    model = nbllm.get_model("sglang")
    assert model.model_name == "served" and str(model.client.base_url).startswith("http://127.0.0.1:9/v1")


def _plugin_package(folder, entry_points: str) -> None:
    """An installed distribution on `folder` (dist-info with METADATA and entry_points.txt) and its module."""
    (folder / "nbllm_tgi_plugin.py").write_text(
        "from nbllm.catalog import ProviderSpec\n"
        "def specs():\n"
        "    return [ProviderSpec(name='tgi', label='TGI', kind='local', default_model='m',\n"
        "                         base_url='http://localhost:3000/v1')]\n")
    info = folder / "nbllm_tgi_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: nbllm-tgi-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)


def test_entry_points_register_providers_and_broken_ones_are_logged(restore_catalog, monkeypatch, caplog, tmp_path):
    _plugin_package(tmp_path, "[nbllm.providers]\ntgi = nbllm_tgi_plugin:specs\nbroken = no_module_named_nothing:specs\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(catalog, "_ENTRY_POINTS_LOADED", False)
    with caplog.at_level(logging.WARNING, logger="nbllm"):
        names = provider_names()
    assert names[-1] == "tgi" and names[:7] == BUILT_INS
    assert any("broken" in r.getMessage() and "could not be loaded" in r.getMessage() for r in caplog.records)


def test_the_plugin_look_finds_only_a_declared_group(monkeypatch, tmp_path):
    """No distribution names the group: no importlib.metadata lookup; one that does (among others
    with entry points of their own): found."""
    from nbllm import plugins

    other = tmp_path / "other-1.0.dist-info"
    other.mkdir()
    (other / "entry_points.txt").write_text("[console_scripts]\nother = other:main\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    assert plugins._may_declare("nbllm.providers") is False
    assert plugins._may_declare("console_scripts") is True
    _plugin_package(tmp_path, "[nbllm.providers]\ntgi = nbllm_tgi_plugin:specs\n")
    assert plugins._may_declare("nbllm.providers") is True
    assert [ep.name for ep in plugins.provider_entry_points()] == ["tgi"]
