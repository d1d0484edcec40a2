"""The shape of one call: described once, errors in one module, a self-hosted OpenAI URL, start notices."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import nbllm
from conftest import reset_nbllm
from nbllm import catalog, pipeline
from nbllm.catalog import ProviderSpec


def test_every_exception_nbllm_defines_lives_in_errors():
    defined = []
    for info in pkgutil.walk_packages(nbllm.__path__, "nbllm."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException) and not issubclass(obj, Warning)
                    and obj.__module__ == info.name):
                defined.append(f"{info.name}.{name}")
    assert defined and all(name.startswith("nbllm.errors.") for name in defined), defined
    from nbllm import errors

    for name in ("ConfigurationError", "ModelError", "ReplayMiss", "ProbeError", "Cancelled", "CellError"):
        assert issubclass(getattr(errors, name), errors.NbllmError)


@pytest.fixture
def counted(monkeypatch):
    """How many times a call is described (the one place that resolves what was asked)."""
    calls: list[str] = []
    real = pipeline.describe

    def describe(prompt, where="ask", *args, **kwargs):
        calls.append(where)
        return real(prompt, where, *args, **kwargs)

    monkeypatch.setattr(pipeline, "describe", describe)
    return calls


def test_each_face_describes_a_call_once(local_provider, counted):
    nbllm.ask("one")
    assert counted == ["ask"]
    counted.clear()
    assert "".join(nbllm.stream("two")) == "Echo: two"
    assert counted == ["stream"]
    counted.clear()
    result = nbllm.map(["a", "b", "c", "d", "e"], "Say {value}", progress=False)
    assert list(result) == [f"Echo: Say {x}" for x in "abcde"] and counted == ["map"]
    counted.clear()
    table = nbllm.compare("three", providers=["lmstudio", "ollama"])
    assert list(table["provider"]) == ["lmstudio", "ollama"] and counted == ["compare/consensus"]


def test_a_call_reads_the_default_once_and_keeps_it(local_provider):
    call = pipeline.describe("hi")
    assert (call.provider, call.model, call.cache_mode) == ("lmstudio", None, "off")
    nbllm.use("ollama")
    assert call.provider == "lmstudio"  # described calls do not follow later changes
    assert nbllm.ask(call).provider == "lmstudio"


def test_per_call_numbers_are_checked_before_anything_is_sent(local_provider):
    for options, words in [({"temperature": 5}, "temperature=5"), ({"timeout": 0}, "timeout=0"),
                           ({"max_retries": -1}, "max_retries=-1"), ({"colour": "red"}, "unknown option")]:
        with pytest.raises(nbllm.ConfigurationError, match=words) as caught:
            nbllm.ask("hi", **options)
        assert caught.value.__context__ is None and caught.value.__cause__ is None
    assert local_provider.chat_requests() == []


# ---- a cloud provider pointed at a server that is not its vendor's --------------------------


@pytest.fixture
def self_hosted_openai(fake_server, monkeypatch):
    fake_server.set(models=["served-model"], loaded="served-model")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-selfhosted-000000")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_server.url + "/v1")
    reset_nbllm()
    return fake_server


def test_a_self_hosted_openai_url_is_probed_and_its_model_detected(self_hosted_openai):
    health = nbllm.health_check(["openai"])["openai"]
    assert health.connected is True and health.model_id == "served-model" and health.model_detected
    answer = nbllm.ask("hi", provider="openai")
    assert answer.model == "served-model" and answer.text == "Echo: hi"
    assert answer.cost_usd == 0 and answer.cost_source == "local"  # not OpenAI's prices: the server is your own
    (sent,) = self_hosted_openai.chat_requests()
    assert sent["body"]["model"] == "served-model" and "max_tokens" in sent["body"]


def test_a_self_hosted_openai_url_with_nothing_listening_is_down(monkeypatch, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-selfhosted-000000")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    reset_nbllm()
    health = nbllm.health_check(["openai"])["openai"]
    assert health.status == "down" and "refused" in health.error
    from nbllm import cli

    assert cli.main(["providers", "--test", "openai", "--timeout", "1"]) == 1
    err = capsys.readouterr().err
    assert "refused" in err and "sk-test" not in err


def test_the_vendors_own_url_is_not_probed(monkeypatch, httpx2_mock):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-vendor-0000000000")
    monkeypatch.setenv("OPENAI_BASE_URL", "https://api.openai.com/v1")
    reset_nbllm()
    health = nbllm.health_check(["openai"])["openai"]
    assert health.status == "available" and health.connected is None  # no request was made (no route mocked)


# ---- a server nbllm starts itself says so --------------------------------------------------


_started: list[str] = []


async def _slow_start(spec, settings, *, start, env):
    """A `prepare` hook like the embedded model's: not running until a call starts it."""
    if not start and not _started:
        return None
    _started.append("yes")
    return _target_url[0]


_target_url: list[str] = []


@pytest.fixture
def starting_provider(fake_server):
    _started.clear()
    _target_url[:] = [fake_server.url]
    spec = ProviderSpec(name="slowstart", label="Slow start", kind="local", default_model="m", base_url=fake_server.url,
                        prepare=f"{__name__}:_slow_start")
    catalog.register_provider(spec)
    reset_nbllm()
    yield fake_server
    catalog._REGISTRY.pop("slowstart", None)
    reset_nbllm()


def test_a_stream_announces_a_server_that_has_to_start(starting_provider):
    text_stream = nbllm.stream("hi", provider="slowstart")
    assert "".join(text_stream) == "Echo: hi"
    assert text_stream.notices == ["starting the Slow start model…"]
    second = nbllm.stream("again", provider="slowstart")
    assert "".join(second) == "Echo: again" and second.notices == []


def test_the_cell_shows_the_notice_in_its_display_then_the_answer(starting_provider):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "nbllm")
    with capture_output() as captured:
        ip.run_cell("%%llm -p slowstart\nhello")
    bundles = [output.data for output in captured.outputs]
    assert bundles[0]["text/plain"] == "starting the Slow start model…"
    assert bundles[-1]["text/markdown"] == "Echo: hello"
