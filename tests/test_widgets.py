"""The provider panel, driven at Python level against real local test servers.

Setting a Dropdown's `value` here is what a click in the page does in the kernel
(the front end sends the new index; ipywidgets turns it into `value`).
"""

from __future__ import annotations

import gc
import json

import pytest

import nbllm
from nbllm import session
from nbllm.session import Selection
from nbllm.widgets import CHECKING, DEFAULT_MODEL, ProviderPanel, _weakly

SECRET = "sk-nbllm-PANEL-SECRET-4242"
WAIT = 10.0  # generous upper bound for a check to be applied; never a timing assertion


@pytest.fixture
def lmstudio(make_server, monkeypatch):
    """LM Studio is a real fake server with two models, one of them loaded."""
    server = make_server(models=["alpha-7b", "beta-3b"], loaded="beta-3b", reply="answer from the panel's pick")
    monkeypatch.setenv("LMSTUDIO_BASE_URL", server.url + "/v1")
    monkeypatch.setenv("LMSTUDIO_MAX_RETRIES", "0")
    return server


@pytest.fixture
def panels():
    """Panels built in a test, closed afterwards even when the test fails."""
    built: list[ProviderPanel] = []

    def build() -> ProviderPanel:
        p = nbllm.panel()
        built.append(p)
        assert p.wait(WAIT), "the first health check was never applied"
        return p

    yield build
    for p in built:
        p.close()


def labels(p: ProviderPanel) -> dict[str, str]:
    return {value: label for label, value in p.provider_select.options}


def model_values(p: ProviderPanel) -> list[str]:
    return [value for _label, value in p.model_select.options]


def test_options_are_labelled_with_each_providers_status(lmstudio, panels, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("GROK_ENABLED", "false")
    p = panels()
    got = labels(p)
    assert got["lmstudio"] == "LM Studio — available"
    assert got["openai"] == "OpenAI — available"
    assert got["anthropic"] == "Anthropic — not configured"
    assert got["grok"] == "xAI Grok — disabled"
    assert got["ollama"] == "Ollama — down"
    assert list(got)[0] == "auto"


def test_model_selector_lists_what_the_local_server_reports(lmstudio, panels):
    p = panels()
    p.provider_select.value = "lmstudio"
    assert model_values(p) == [DEFAULT_MODEL, "alpha-7b", "beta-3b"]
    assert p.model_select.options[0][0] == "beta-3b (loaded)"
    assert p.model_select.value == DEFAULT_MODEL


def test_model_selector_shows_the_configured_model_for_cloud(panels, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    monkeypatch.setenv("ANTHROPIC_MODEL", "claude-test-model")
    p = panels()
    p.provider_select.value = "anthropic"
    assert p.model_select.options == ((f"claude-test-model (configured)", DEFAULT_MODEL),)
    assert nbllm.current() == Selection("anthropic", None)


def test_choosing_provider_and_model_sets_the_kernel_default_used_by_ask(lmstudio, panels, monkeypatch):
    monkeypatch.setenv("NBLLM_PROVIDER", "ollama")
    p = panels()
    assert nbllm.current() == Selection("ollama", None)
    p.provider_select.value = "lmstudio"
    assert nbllm.current() == Selection("lmstudio", None)
    p.model_select.value = "alpha-7b"
    assert nbllm.current() == Selection("lmstudio", "alpha-7b")
    assert "lmstudio" in p.default_line.value and "alpha-7b" in p.default_line.value

    answer = nbllm.ask("Which provider is this?")  # no provider named: the panel's choice
    assert answer.text == "answer from the panel's pick"
    assert lmstudio.chat_requests()[-1]["body"]["model"] == "alpha-7b"

    p.model_select.value = DEFAULT_MODEL
    assert nbllm.current() == Selection("lmstudio", None)
    p.provider_select.value = "auto"
    assert nbllm.current() == Selection("auto", None)


def test_use_elsewhere_moves_every_panel_without_feedback(lmstudio, panels):
    a, b = panels(), panels()
    seen: list[Selection] = []
    stop = nbllm.observe(seen.append)
    try:
        nbllm.use("lmstudio", "beta-3b")
        for p in (a, b):
            assert p.provider_select.value == "lmstudio"
            assert p.model_select.value == "beta-3b"
        a.provider_select.value = "ollama"  # a click in one panel moves the other
        assert b.provider_select.value == "ollama"
        assert b.model_select.value == DEFAULT_MODEL
        nbllm.use("lmstudio", "a-model-the-server-did-not-list")
        assert b.model_select.value == "a-model-the-server-did-not-list"
    finally:
        stop()
    # One notification per change: panels moving their selectors never call use() again.
    assert seen == [Selection("lmstudio", "beta-3b"), Selection("ollama", None),
                    Selection("lmstudio", "a-model-the-server-did-not-list")]


def test_llm_providers_use_magic_moves_the_panel(lmstudio, panels):
    from IPython.core.interactiveshell import InteractiveShell

    from nbllm.magics.providers import ProviderMagics

    shell = InteractiveShell.instance()
    shell.register_magics(ProviderMagics)
    p = panels()
    shell.run_line_magic("llm_providers", "--use lmstudio")
    assert p.provider_select.value == "lmstudio"
    assert nbllm.current().provider == "lmstudio"


def test_choosing_a_down_provider_is_allowed_and_marked(panels):
    p = panels()
    p.provider_select.value = "ollama"
    assert nbllm.current() == Selection("ollama", None)
    assert "ollama is down" in p.default_line.value
    assert "connection refused" in p.default_line.value


def test_a_disabled_provider_is_refused_and_the_selector_goes_back(panels, monkeypatch):
    monkeypatch.setenv("GROK_ENABLED", "false")
    monkeypatch.setenv("NBLLM_PROVIDER", "ollama")
    p = panels()
    p.provider_select.value = "grok"
    assert nbllm.current() == Selection("ollama", None)
    assert p.provider_select.value == "ollama"
    assert "disabled" in p.default_line.value
    nbllm.use("lmstudio")  # a change made elsewhere clears the refusal
    assert "disabled" not in p.default_line.value


def test_a_hanging_server_shows_checking_then_timed_out(make_server, panels, monkeypatch):
    server = make_server(mode="hang")
    monkeypatch.setenv("LMSTUDIO_BASE_URL", server.url + "/v1")
    monkeypatch.setenv("NBLLM_HEALTH_TIMEOUT", "0.5")
    p = nbllm.panel()
    try:
        # Built and returned while the probe still hangs: nothing waited for it.
        assert not p.wait(0)
        assert CHECKING in p.check_label.value
        assert CHECKING in p.table.value
        assert labels(p)["lmstudio"] == f"LM Studio — {CHECKING}"
        assert p.refresh_button.disabled
        assert p.wait(WAIT)
        assert labels(p)["lmstudio"] == "LM Studio — down"
        row = next(r for r in p.table.value.split("<tr>") if "lmstudio" in r)
        assert "timed out after 0.5 s" in row
        assert not p.refresh_button.disabled
    finally:
        p.close()


def test_a_provider_whose_check_never_finishes_times_out_alone(lmstudio, panels, monkeypatch):
    """The panel bounds each provider: one stuck check (here: beyond its own probe bound)
    gets a "timed out" row; the other providers keep their results."""
    import asyncio

    from nbllm import health, widgets

    real_check = health.check_provider

    async def stuck_for_ollama(spec, settings, timeout, prepare=None):
        if spec.name == "ollama":
            await asyncio.sleep(60)  # cancelled when the panel's bound passes
        return await real_check(spec, settings, timeout, prepare)

    monkeypatch.setattr(health, "check_provider", stuck_for_ollama)
    monkeypatch.setattr(widgets, "PANEL_MARGIN", 0.2)
    monkeypatch.setenv("NBLLM_HEALTH_TIMEOUT", "0.5")
    p = panels()
    assert labels(p)["lmstudio"] == "LM Studio — available"
    assert p.health["lmstudio"].models == ["alpha-7b", "beta-3b"]
    assert labels(p)["ollama"] == "Ollama — down"
    row = next(r for r in p.table.value.split("<tr>") if ">ollama<" in r)
    assert "timed out after 0.7 s" in row
    assert "checked" in p.check_label.value and "timed out" not in p.check_label.value

    # The next Refresh, with the check no longer stuck, replaces the "timed out" row.
    monkeypatch.setattr(health, "check_provider", real_check)
    p.refresh()
    assert p.wait(WAIT)
    row = next(r for r in p.table.value.split("<tr>") if ">ollama<" in r)
    assert "timed out" not in row and "refused" in row
    assert labels(p)["ollama"] == "Ollama — down"


def test_a_slow_first_import_does_not_count_against_the_bound(lmstudio, panels, monkeypatch):
    """In a fresh kernel the first check may wait on the main thread's imports (Run All
    importing pydantic-ai for %%llm): that wait happens before any provider's clock starts."""
    import time

    from nbllm import probes, widgets

    real_client = probes.shared_client
    calls = []

    def slow_first_client():
        if not calls:
            time.sleep(1.0)  # blocks nbllm's loop, as a contended `import httpx2` does
        calls.append(1)
        return real_client()

    monkeypatch.setattr(probes, "shared_client", slow_first_client)
    monkeypatch.setattr(widgets, "PANEL_MARGIN", 0.2)
    monkeypatch.setenv("NBLLM_HEALTH_TIMEOUT", "0.5")
    p = panels()
    assert labels(p)["lmstudio"] == "LM Studio — available"
    assert "timed out" not in p.table.value


def test_a_failed_check_leaves_no_row_checking(lmstudio, monkeypatch):
    from nbllm.registry import ProviderRegistry

    async def broken(self, names=None, timeout=None, bound=None):
        raise RuntimeError("the check broke")

    monkeypatch.setattr(ProviderRegistry, "check", broken)
    p = nbllm.panel()
    try:
        assert p.wait(WAIT)
        assert "check failed: RuntimeError: the check broke" in p.check_label.value
        assert CHECKING not in p.table.value
        assert all(CHECKING not in label for label in labels(p).values())
        row = next(r for r in p.table.value.split("<tr>") if ">lmstudio<" in r)
        assert "check failed: RuntimeError: the check broke" in row
    finally:
        p.close()


def test_refresh_runs_in_the_background_and_picks_up_new_models(lmstudio, panels):
    p = panels()
    p.provider_select.value = "lmstudio"
    lmstudio.set(models=["gamma-1b"], loaded="gamma-1b", latency=0.3)
    future = p.refresh()
    assert not future.done()  # refresh() returned while the server was still answering
    assert labels(p)["lmstudio"] == f"LM Studio — available ({CHECKING})"
    assert p.wait(WAIT)
    assert model_values(p) == [DEFAULT_MODEL, "gamma-1b"]
    assert labels(p)["lmstudio"] == "LM Studio — available"
    assert p.health["lmstudio"].models == ["gamma-1b"]


def test_only_the_latest_refresh_is_applied(lmstudio, panels):
    p = panels()
    lmstudio.set(models=["old-model"], loaded="old-model", latency=0.3)
    first = p.refresh()
    lmstudio.set(models=["new-model"], loaded="new-model", latency=0.0)
    p.refresh()
    assert p.wait(WAIT)
    assert first.cancelled()  # the superseded check was dropped
    assert p.health["lmstudio"].models == ["new-model"]


def test_no_key_appears_in_any_widget_state(lmstudio, panels, monkeypatch):
    from ipywidgets.widgets.widget import _instances

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET + "-anthropic")
    monkeypatch.setenv("LMSTUDIO_API_KEY", SECRET + "-lmstudio")
    monkeypatch.setenv("OLLAMA_BASE_URL", f"http://user:{SECRET}@127.0.0.1:9")
    p = panels()
    for name in ("openai", "anthropic", "lmstudio", "ollama"):
        p.provider_select.value = name
    p.refresh()
    assert p.wait(WAIT)
    states = [json.dumps(w.get_state(), default=str) for w in list(_instances.values())]
    assert any("gpt-5-mini" in s for s in states)  # the scan does see the panel's text
    assert not [s for s in states if "PANEL-SECRET" in s]


def test_close_unsubscribes_and_closes_children(panels):
    before = len(session._observers)
    p = nbllm.panel()
    p.wait(WAIT)
    assert len(session._observers) == before + 1
    children = [p.provider_select, p.model_select, p.table]
    p.close()
    assert len(session._observers) == before
    assert all(c.comm is None for c in children)
    nbllm.use("ollama")  # a closed panel is not touched
    assert p.provider_select.value != "ollama"


def test_observer_does_not_keep_a_forgotten_panel_alive():
    class Target:
        def __init__(self) -> None:
            self.seen: list[Selection] = []

        def _on_selection(self, selection: Selection) -> None:
            self.seen.append(selection)

    before = len(session._observers)
    target = Target()
    _weakly(target, session.observe, "_on_selection")  # type: ignore[arg-type]
    nbllm.use("ollama")
    assert target.seen == [Selection("ollama", None)]
    del target
    gc.collect()
    nbllm.use("llamacpp")  # the dead observer removes itself
    assert len(session._observers) == before


def test_panel_is_displayable_as_a_widget(panels):
    p = panels()
    bundle = p._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "nbllm-panel" in p._dom_classes


# ---- aliases, custom endpoints and the model list (issue 10) -------------------------------------


def test_aliases_are_offered_with_what_they_name(lmstudio, panels, monkeypatch):
    from nbllm.endpoints import Alias

    nbllm.get_registry().aliases["fast"] = Alias("fast", "lmstudio:alpha-7b")  # as set_alias(..., save=False) does
    p = panels()
    got = labels(p)
    assert got["fast"] == "fast → lmstudio:alpha-7b — available"
    assert list(got).index("fast") > list(got).index("lmstudio")  # after the providers
    calls = []
    real_use = session.use

    def recording_use(provider, model=None, save=False):
        calls.append((provider, model))
        return real_use(provider, model, save)

    monkeypatch.setattr(session, "use", recording_use)
    p.provider_select.value = "fast"
    assert calls == [("fast", None)]  # the panel decides nothing: use() says what an alias means
    assert p.list_button.disabled  # an alias is not a provider to list


def test_a_custom_endpoint_is_offered_and_its_models_come_from_health(make_server, panels):
    server = make_server(models=["lab-model-1", "lab-model-2"], loaded="lab-model-2")
    nbllm.get_registry().add_endpoint("mylab", base_url=server.url + "/v1", kind="local", save=False)
    p = panels()
    assert labels(p)["mylab"].endswith("— available")
    asked = len(server.requests)
    p.provider_select.value = "mylab"
    assert model_values(p) == [DEFAULT_MODEL, "lab-model-1", "lab-model-2"]
    assert len(server.requests) == asked  # the dropdown uses what the health check found: no request
    assert p.list_button.disabled  # a local server was listed by its health check already
    p.model_select.value = "lab-model-1"
    assert nbllm.current() == Selection("mylab", "lab-model-1")


@pytest.fixture
def cloud_models(httpx2_mock, monkeypatch):
    """OpenAI's model list mocked; local probes reach the real (closed or fake) local ports."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    httpx2_mock.route(host="127.0.0.1").pass_through()
    return httpx2_mock.get("https://api.openai.com/v1/models")


def test_list_models_makes_one_request_only_when_asked_and_fills_the_dropdown(cloud_models, panels):
    cloud_models.respond(200, json={"data": [{"id": "gpt-4.1"}, {"id": "gpt-5-mini"}]})
    p = panels()
    p.provider_select.value = "openai"
    p.refresh()
    assert p.wait(WAIT)
    assert cloud_models.call_count == 0  # status, health and choosing never list a cloud provider
    assert model_values(p) == [DEFAULT_MODEL]
    assert not p.list_button.disabled
    p.list_button.click()
    assert p.wait_models(WAIT)
    assert cloud_models.call_count == 1
    assert cloud_models.calls.last.request.headers["Authorization"] == f"Bearer {SECRET}"
    assert model_values(p) == [DEFAULT_MODEL, "gpt-4.1", "gpt-5-mini"]
    assert "2 models listed" in p.models_note.value
    p.model_select.value = "gpt-4.1"
    assert nbllm.current() == Selection("openai", "gpt-4.1")
    p.refresh()  # a later check keeps the list and does not ask again
    assert p.wait(WAIT)
    assert cloud_models.call_count == 1
    assert model_values(p) == [DEFAULT_MODEL, "gpt-4.1", "gpt-5-mini"] and p.model_select.value == "gpt-4.1"


def test_a_listing_failure_is_one_line_without_the_key(cloud_models, panels):
    cloud_models.respond(401, json={"error": {"message": f"Incorrect API key provided: {SECRET}"}})
    p = panels()
    p.provider_select.value = "openai"
    p.list_models()
    assert p.wait_models(WAIT)
    note = p.models_note.value
    assert "HTTP 401" in note and "OPENAI_API_KEY" in note
    assert "PANEL-SECRET" not in note and "Traceback" not in note and "<br>" not in note and "\n" not in note
    assert model_values(p) == [DEFAULT_MODEL]
    assert not p.list_button.disabled  # the user may try again


def test_listing_without_a_key_says_which_variable(panels, httpx2_mock):
    httpx2_mock.route(host="127.0.0.1").pass_through()
    p = panels()
    p.provider_select.value = "anthropic"
    p.list_models()
    assert p.wait_models(WAIT)
    assert "set ANTHROPIC_API_KEY" in p.models_note.value
    assert not [c for c in httpx2_mock.calls if c.request.url.host != "127.0.0.1"]


def test_list_models_does_not_apply_to_local_servers_or_auto(lmstudio, panels):
    p = panels()
    for name in ("auto", "lmstudio"):
        p.provider_select.value = name
        assert p.list_button.disabled
        assert p.list_models() is None
    asked = len(lmstudio.requests)
    assert p.list_models() is None and len(lmstudio.requests) == asked


# ---- issue 15: the checking state, rows that follow calls, a model list never blank ----------

def test_refresh_shows_checking_on_the_button_until_the_check_is_applied(make_server, panels, monkeypatch):
    server = make_server(mode="hang")
    monkeypatch.setenv("LMSTUDIO_BASE_URL", server.url + "/v1")
    monkeypatch.setenv("NBLLM_HEALTH_TIMEOUT", "0.5")
    p = panels()
    assert (p.refresh_button.description, p.refresh_button.icon) == ("Refresh", "refresh")
    p.refresh()
    # Seen at once, on the button itself and beside it, while the hanging probe runs.
    assert p.refresh_button.description == "Checking…" and "spin" in p.refresh_button.icon
    assert p.refresh_button.disabled and CHECKING in p.check_label.value
    assert p.wait(WAIT)
    assert (p.refresh_button.description, p.refresh_button.icon, p.refresh_button.disabled) == \
        ("Refresh", "refresh", False)
    assert "available · checked" in p.check_label.value and "white-space:nowrap" in p.check_label.value


def test_a_check_that_answers_at_once_still_shows_checking_for_a_moment(panels, monkeypatch):
    import time

    from nbllm import widgets

    p = panels()
    started = time.monotonic()
    p.refresh()
    assert p.wait(WAIT)
    assert time.monotonic() - started >= widgets.MIN_CHECKING_SECONDS * 0.9  # never a flash nobody sees


def _row(p: ProviderPanel, name: str) -> str:
    return next(r for r in p.table.value.split("<tr>") if f">{name}<" in r)


def test_a_server_that_goes_down_during_a_call_gets_its_row_updated(make_server, panels, monkeypatch):
    server = make_server(models=["alpha-7b"], loaded="alpha-7b", reply="up")
    monkeypatch.setenv("LMSTUDIO_BASE_URL", server.url + "/v1")
    monkeypatch.setenv("LMSTUDIO_MAX_RETRIES", "0")
    p = panels()
    assert p.health["lmstudio"].available and "LM Studio — available" == labels(p)["lmstudio"]
    server.die()  # refuses new connections and drops kept-alive ones, as a server that went away
    assert server.dead.wait(WAIT)
    with pytest.raises(nbllm.NbllmError):
        nbllm.ask("still there?", provider="lmstudio")
    assert p.wait_rows(WAIT)
    assert p.health["lmstudio"].status == "down"
    assert labels(p)["lmstudio"] == "LM Studio — down" and ">down<" in _row(p, "lmstudio")


def test_a_server_that_answers_a_call_again_gets_its_row_updated(make_server, panels, monkeypatch):
    from fakeserver import FakeLLMServer

    first = make_server(models=["alpha-7b"], loaded="alpha-7b")
    port = first.port
    first.stop()
    monkeypatch.setenv("LMSTUDIO_BASE_URL", first.url + "/v1")
    monkeypatch.setenv("LMSTUDIO_MAX_RETRIES", "0")
    p = panels()
    assert p.health["lmstudio"].status == "down"
    with FakeLLMServer(port=port, models=["alpha-7b"], loaded="alpha-7b", reply="back again"):
        assert nbllm.ask("are you back?", provider="lmstudio").text == "back again"
        assert p.wait_rows(WAIT)
        assert p.health["lmstudio"].available
        assert labels(p)["lmstudio"] == "LM Studio — available" and "alpha-7b" in _row(p, "lmstudio")
        p.provider_select.value = "lmstudio"
        assert "alpha-7b" in model_values(p)


def test_a_call_that_changes_nothing_checks_nothing_again(lmstudio, panels, monkeypatch):
    from nbllm.registry import ProviderRegistry

    p = panels()
    checks: list[object] = []
    real_check = ProviderRegistry.check

    def counted(self, names=None, *args, **kwargs):
        if kwargs.get("bound") is not None:  # the panel's (routing's own model detection passes none)
            checks.append(names)
        return real_check(self, names, *args, **kwargs)

    monkeypatch.setattr(ProviderRegistry, "check", counted)
    assert nbllm.ask("hello", provider="lmstudio").text == "answer from the panel's pick"
    assert p.wait_rows(0)  # an available row that answered: nothing is stale
    assert checks == []
    lmstudio.set(fail_first=4, status=400)  # a failure on a row shown available: that row alone again
    with pytest.raises(nbllm.NbllmError):
        nbllm.ask("hello", provider="lmstudio")
    assert p.wait_rows(WAIT) and checks == [["lmstudio"]]
    assert p.health["lmstudio"].available  # (its probes still answer: only chats fail)
    for _ in range(3):  # more failures at once (a map on a failing server): no more looks for a while
        with pytest.raises(nbllm.NbllmError):
            nbllm.ask("hello", provider="lmstudio")
    assert p.wait_rows(WAIT) and checks == [["lmstudio"]]


def test_the_model_list_names_the_embedded_model_before_it_starts(panels, monkeypatch):
    monkeypatch.delenv("EMBEDDED_BASE_URL", raising=False)  # nbllm runs it (not started by a check)
    p = panels()
    health = p.health["embedded"]
    assert health.note == "starts on first use" and health.model_id
    p.provider_select.value = "embedded"
    options = list(p.model_select.options)
    assert all(label.strip() for label, _value in options)
    assert options[0] == (f"{health.model_id} (starts on first use)", DEFAULT_MODEL)


def test_every_providers_model_list_has_a_named_entry(lmstudio, panels, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    p = panels()
    for name in nbllm.providers():
        p.provider_select.value = name
        assert p.model_select.options and all(label.strip() for label, _v in p.model_select.options), name


def test_a_closed_panel_stops_listening_to_calls(panels):
    from nbllm import call_events

    p = panels()
    before = len(call_events._listeners)
    p.close()
    assert len(call_events._listeners) == before - 1
