"""A fleet of servers behind one provider name: the scheduler (`nbllm.fleet`), the
settings that make one (`{P}_BASE_URL` as a comma list), health per server, and
`map`/`ask`/`compare` spread over real local test servers, one of which dies mid-map."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import warnings

import pytest

import nbllm
from nbllm import fleet
from nbllm.catalog import get_spec
from nbllm.config import NbllmConfigWarning, forget_warnings, load_provider_settings
from nbllm.registry import get_registry

A, B, C = "http://a:8000/v1", "http://b:8000/v1", "http://c:8000/v1"


@pytest.fixture(autouse=True)
def _fresh_fleet():
    forget_warnings()
    fleet.reset()
    yield
    fleet.reset()


# ---- pick / lease / take_out -------------------------------------------------------------


def test_pick_prefers_the_least_busy_server():
    with fleet.lease(A), fleet.lease(A), fleet.lease(B):
        assert fleet.pick([A, B, C]) == C
        with fleet.lease(C), fleet.lease(C):
            assert fleet.pick([A, B, C]) == B  # A: 2, B: 1, C: 2
    assert fleet.state(A).in_flight == 0 and fleet.state(C).in_flight == 0


def test_ties_go_to_the_server_used_least_recently_so_load_spreads_evenly():
    picks = [fleet.pick([A, B, C]) for _ in range(9)]
    assert picks == [A, B, C] * 3
    with fleet.lease(B):  # B busy: the other two alternate
        assert [fleet.pick([A, B, C]) for _ in range(4)] in ([A, C, A, C], [C, A, C, A])


def test_leases_held_by_concurrent_requests_spread_them():
    """Requests that hold their lease while they run go one per server, then two per server."""
    held = []
    for _ in range(6):
        url = fleet.pick([A, B, C])
        lease = fleet.lease(url)
        lease.__enter__()
        held.append((url, lease))
    assert sorted(url for url, _ in held) == [A, A, B, B, C, C]
    for _, lease in held:
        lease.__exit__(None, None, None)
    assert all(fleet.state(u).in_flight == 0 for u in (A, B, C))


def test_a_server_taken_out_is_passed_over_until_put_back():
    fleet.take_out(B, "connection refused at http://b:8000/v1")
    assert fleet.is_out(B) and not fleet.is_out(A)
    assert B not in {fleet.pick([A, B, C]) for _ in range(10)}
    state = fleet.state(B)
    assert state.out and "connection refused" in state.reason and 29 < state.out_for <= fleet.OUT_SECONDS
    fleet.put_back(B)
    assert not fleet.is_out(B) and fleet.state(B).reason is None
    assert B in {fleet.pick([A, B, C]) for _ in range(3)}


def test_a_take_out_expires_by_itself():
    fleet.take_out(A, "HTTP 500", seconds=0.05)
    assert fleet.pick([A, B]) == B and fleet.is_out(A)
    time.sleep(0.08)
    assert not fleet.is_out(A) and fleet.state(A).out_until is None
    assert fleet.pick([A, B]) == A  # used least recently (never)


def test_exclude_skips_servers_already_tried():
    assert fleet.pick([A, B, C], exclude={A, B}) == C
    assert fleet.pick([A, B, C], exclude=[A + "/"]) in (B, C)  # a trailing slash is the same server


def test_when_every_server_is_out_the_one_back_soonest_is_picked():
    fleet.take_out(A, "down", seconds=30)
    fleet.take_out(B, "down", seconds=5)
    fleet.take_out(C, "down", seconds=60)
    assert fleet.pick([A, B, C]) == B
    assert fleet.pick([A, B, C], exclude={B}) == A
    assert fleet.pick([A, B, C], exclude={A, B, C}) == B  # all excluded too: still an answer
    assert fleet.pick([A]) == A  # one server: always that one


def test_pick_of_no_servers_is_a_clear_error():
    with pytest.raises(ValueError, match="at least one server"):
        fleet.pick([])


def test_a_reason_is_kept_without_secrets():
    fleet.take_out(A, "refused at http://user:hunter22@a:8000/v1")
    assert "hunter22" not in fleet.state(A).reason and "a:8000" in fleet.state(A).reason


def test_state_never_shows_a_url_password():
    secret = "http://user:hunter22@a:8000/v1"
    fleet.take_out(secret, "HTTP 500")
    shown = fleet.state(secret)
    assert "hunter22" not in repr(shown) and shown.url == "http://a:8000/v1" and shown.out
    assert "hunter22" not in repr(fleet.state("http://u:hunter22@never-seen/v1"))


@pytest.mark.parametrize("how, cause, undone", [
    ({}, "unreachable", True),                    # a call got no answer
    ({"probe": True, "status": 503}, "probe", True),  # a probe found it down
    ({"seconds": 60}, "backoff", False),          # the server asked: Retry-After
    ({"seconds": 60, "status": 503}, "backoff", False),
    ({"status": 500}, "error", False),            # a call's 5xx, no Retry-After
    ({"status": 429}, "error", False),
])
def test_a_probes_answer_undoes_only_a_take_out_for_nothing_answering(how, cause, undone):
    fleet.take_out(A, "failed", **how)
    assert fleet.state(A).cause == cause
    assert fleet.probe_answered(A) is undone
    assert fleet.is_out(A) is not undone
    if not undone:
        assert fleet.state(A).cause == cause and fleet.state(A).out_for > 29
    assert fleet.probe_answered(B) is True and not fleet.is_out(B)  # never out: stays in


def test_put_back_ends_any_take_out():
    fleet.take_out(A, "HTTP 429", seconds=60)
    fleet.put_back(A)
    assert not fleet.is_out(A) and fleet.state(A).cause is None


def test_a_take_out_never_shortens_a_longer_one():
    fleet.take_out(A, "HTTP 429: slow down", seconds=60)
    fleet.take_out(A, "timed out", probe=True)  # 30 s: the 60 s Retry-After stays, with its cause
    state = fleet.state(A)
    assert state.cause == "backoff" and state.out_for > 59 and "slow down" in state.reason
    assert not fleet.probe_answered(A) and fleet.is_out(A)
    fleet.take_out(B, "HTTP 429", seconds=5)
    fleet.take_out(B, "connection refused")  # lasts longer: replaces it
    assert fleet.state(B).cause == "unreachable" and fleet.state(B).out_for > 29
    assert fleet.probe_answered(B) and not fleet.is_out(B)


def test_lease_counts_are_exact_under_many_threads():
    """Threads leasing and picking at once: no count is lost, none goes negative."""
    servers = [A, B, C]
    peak: dict[str, int] = {u: 0 for u in servers}
    lock = threading.Lock()
    start = threading.Barrier(12)

    def worker() -> None:
        start.wait()
        for _ in range(300):
            url = fleet.pick(servers)
            with fleet.lease(url):
                now = fleet.state(url).in_flight
                with lock:
                    peak[url] = max(peak[url], now)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(fleet.state(u).in_flight == 0 for u in servers)
    assert all(1 <= peak[u] <= 12 for u in servers), peak


def test_lease_works_inside_async_code_and_is_released_on_error():
    async def one(url: str) -> int:
        with fleet.lease(url):
            await asyncio.sleep(0.01)
            return fleet.state(url).in_flight

    async def main() -> list[int]:
        return await asyncio.gather(*(one(A) for _ in range(5)))

    assert max(asyncio.run(main())) == 5
    with pytest.raises(RuntimeError):
        with fleet.lease(B):
            raise RuntimeError("boom")
    assert fleet.state(A).in_flight == 0 and fleet.state(B).in_flight == 0


def test_reset_forgets_everything():
    fleet.take_out(A, "down")
    fleet.reset()
    assert not fleet.is_out(A) and fleet.state(A).in_flight == 0


# ---- settings ----------------------------------------------------------------------------


def settings_for(provider: str, **env: str):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        settings = load_provider_settings(get_spec(provider), env)
    return settings, [str(w.message) for w in caught if issubclass(w.category, NbllmConfigWarning)]


def test_a_comma_list_is_a_fleet_and_base_url_stays_the_first():
    settings, problems = settings_for("vllm", VLLM_BASE_URL=f" {A}/ , {B},{C}")
    assert problems == []
    assert settings.servers == (A, B, C) and settings.base_url == A and not settings.base_url_is_default


def test_one_url_is_a_fleet_of_one():
    settings, problems = settings_for("lmstudio", LMSTUDIO_BASE_URL="http://gpu:1234/v1")
    assert problems == [] and settings.servers == ("http://gpu:1234/v1",) == (settings.base_url,)
    default, _ = settings_for("vllm")
    assert default.servers == ("http://localhost:8000/v1",) and default.base_url_is_default


def test_a_bad_url_in_the_list_is_one_warning_naming_it_and_is_left_out():
    settings, problems = settings_for("vllm", VLLM_BASE_URL=f"{A},ftp://b:8000,{C}")
    assert settings.servers == (A, C) and settings.base_url == A
    assert len(problems) == 1, problems
    assert "VLLM_BASE_URL" in problems[0] and "'ftp://b:8000'" in problems[0] and "leaving it out" in problems[0]
    assert settings.problems == (problems[0],)


def test_a_list_with_no_good_url_keeps_the_default():
    settings, problems = settings_for("vllm", VLLM_BASE_URL="ftp://a,b:8000")
    assert settings.servers == ("http://localhost:8000/v1",) and settings.base_url_is_default
    assert len(problems) == 1 and "none of its entries" in problems[0] and "the default" in problems[0]


def test_duplicates_are_dropped():
    settings, problems = settings_for("vllm", VLLM_BASE_URL=f"{A},{B},{A}/,{B}")
    assert problems == [] and settings.servers == (A, B)


def test_a_password_in_a_fleet_url_never_shows():
    secret_url = "http://user:hunter22@b:8000/v1"
    settings, problems = settings_for("vllm", VLLM_BASE_URL=f"{A},{secret_url},nope")
    assert settings.servers == (A, secret_url)  # requests keep the real URL
    assert "hunter22" not in repr(settings) and "hunter22" not in problems[0]


def test_ollama_host_stays_one_server():
    settings, _ = settings_for("ollama", OLLAMA_HOST="gpu:11500")
    assert settings.servers == ("http://gpu:11500",)


def test_a_catalog_base_url_may_be_a_comma_list():
    from nbllm.catalog import ProviderSpec

    spec = ProviderSpec(name="mylab", label="My lab", kind="local", default_model="m", base_url=f"{A},{B}",
                        probe="openai")
    settings = load_provider_settings(spec, {})
    assert settings.servers == (A, B) and settings.base_url == A and settings.base_url_is_default


def test_changing_base_url_keeps_servers_in_step():
    settings, _ = settings_for("vllm", VLLM_BASE_URL=f"{A},{B}")
    assert settings.with_(base_url=B).servers == (A, B)  # one server of the fleet: the fleet stays
    assert settings.with_(base_url="http://other/v1").servers == ("http://other/v1",)  # a new address


def test_list_shows_the_fleet_variable(monkeypatch, capsys):
    from nbllm.cli import main

    monkeypatch.setenv("VLLM_BASE_URL", f"{A},{B}")
    nbllm.reinit()
    assert main(["providers", "--list"]) == 0
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if "VLLM_BASE_URL" in row)
    assert A in line and B in line and "env" in line


# ---- health per server -------------------------------------------------------------------


@pytest.fixture
def three(make_server):
    """Three real servers; the second is stopped (its port refuses connections)."""
    servers = [make_server(models=["m1"]), make_server(models=["m2"]), make_server(models=["m1", "m3"])]
    servers[1].stop()
    return servers


def _fleet_env(monkeypatch, servers, provider: str = "vllm", password: str | None = None) -> None:
    urls = [s.url + "/v1" for s in servers]
    if password:
        urls[0] = urls[0].replace("http://", f"http://user:{password}@")
    monkeypatch.setenv("NBLLM_HEALTH_TIMEOUT", "1")
    monkeypatch.setenv(f"{provider.upper()}_BASE_URL", ",".join(urls))
    nbllm.reinit()


def test_health_probes_each_server_and_shows_each(three, monkeypatch):
    _fleet_env(monkeypatch, three, password="hunter22")
    h = nbllm.health_check(["vllm"])["vllm"]
    assert h.connected is True and h.status == "available"
    assert [s.connected for s in h.servers] == [True, False, True]
    assert "connection refused" in h.servers[1].error and h.servers[0].error is None
    assert all(s.latency_ms is not None for s in h.servers)
    assert h.models == ["m1", "m3"]  # the union of what the servers that answered list, in order
    assert h.note == "2/3 servers answering"
    assert "hunter22" not in h.base_url and all(three[i].url in h.base_url for i in range(3))
    assert fleet.is_out(get_registry().settings("vllm").servers[1])  # a failed probe takes it out
    assert not fleet.is_out(get_registry().settings("vllm").servers[0])
    assert [s["status"] for s in h.as_dict()["servers"]] == ["available", "down", "available"]


def test_a_successful_probe_puts_a_server_back(make_server, monkeypatch):
    servers = [make_server(), make_server()]
    _fleet_env(monkeypatch, servers)
    urls = get_registry().settings("vllm").servers
    fleet.take_out(urls[0], "HTTP 500")
    assert fleet.is_out(urls[0])
    nbllm.health_check(["vllm"])
    assert not fleet.is_out(urls[0])


def test_a_probe_does_not_undo_a_retry_after_backoff(make_server, monkeypatch):
    """A server the pipeline took out for its Retry-After stays out through panel refreshes,
    and its row says for how long and why."""
    servers = [make_server(), make_server()]
    _fleet_env(monkeypatch, servers)
    urls = get_registry().settings("vllm").servers
    fleet.take_out(urls[0], "HTTP 429: rate limited", seconds=60)
    for _ in range(2):
        h = nbllm.health_check(["vllm"])["vllm"]
        assert fleet.is_out(urls[0]), "a successful probe put a 429'd server back"
    assert h.servers[0].connected is True  # it answers its probe, and is still left alone
    assert h.servers[0].note == "taken out for 60 s: HTTP 429: rate limited"
    assert h.servers[1].note is None and not fleet.is_out(urls[1])
    assert all(fleet.pick(urls) == urls[1] for _ in range(5))


def test_a_probe_does_not_undo_a_calls_5xx(make_server, monkeypatch):
    servers = [make_server(), make_server()]
    _fleet_env(monkeypatch, servers)
    urls = get_registry().settings("vllm").servers
    fleet.take_out(urls[1], "HTTP 500: CUDA out of memory", status=500)
    h = nbllm.health_check(["vllm"])["vllm"]
    assert fleet.is_out(urls[1]) and "CUDA out of memory" in h.servers[1].note


def test_a_probe_puts_back_what_a_failed_probe_took_out(make_server, monkeypatch):
    servers = [make_server(mode="error", status=503), make_server()]
    _fleet_env(monkeypatch, servers)
    urls = get_registry().settings("vllm").servers
    h = nbllm.health_check(["vllm"])["vllm"]
    assert fleet.is_out(urls[0]) and fleet.state(urls[0]).cause == "probe"
    assert h.servers[0].note == "taken out for 30 s"  # the error column already says why
    servers[0].set(mode="ok")  # e.g. its model finished loading
    h = nbllm.health_check(["vllm"])["vllm"]
    assert not fleet.is_out(urls[0]) and h.servers[0].note is None


@pytest.mark.parametrize("status", [401, 404, 429])
def test_a_probe_the_server_refuses_does_not_take_it_out(make_server, monkeypatch, status):
    """A 401/404/429 to the probe: the server is there and says what is wrong; it is not down."""
    servers = [make_server(mode="error", status=status), make_server()]
    _fleet_env(monkeypatch, servers)
    urls = get_registry().settings("vllm").servers
    h = nbllm.health_check(["vllm"])["vllm"]
    assert h.servers[0].connected is False and h.servers[0].http_status == status
    assert not fleet.is_out(urls[0]) and h.servers[0].note is None


def test_a_probe_that_times_out_takes_the_server_out(make_server, monkeypatch):
    servers = [make_server(mode="hang"), make_server()]
    _fleet_env(monkeypatch, servers)
    urls = get_registry().settings("vllm").servers
    h = nbllm.health_check(["vllm"])["vllm"]
    assert "timed out" in h.servers[0].error and fleet.is_out(urls[0])


def test_health_probes_the_servers_concurrently(make_server, monkeypatch):
    barrier = threading.Barrier(3, timeout=2)
    servers = [make_server(barrier=barrier) for _ in range(3)]
    _fleet_env(monkeypatch, servers)
    h = nbllm.health_check(["vllm"])["vllm"]
    assert [s.connected for s in h.servers] == [True, True, True], [s.error for s in h.servers]


def test_a_fleet_where_nothing_answers_says_so_per_server(three, monkeypatch):
    for s in three:
        s.stop()
    _fleet_env(monkeypatch, three)
    h = nbllm.health_check(["vllm"])["vllm"]
    assert h.connected is False and h.status == "down" and h.note == "0/3 servers answering"
    assert h.error.startswith("no server answered") and h.error.count("connection refused") == 3


def test_tables_show_a_row_per_server_under_the_provider(three, monkeypatch):
    from nbllm import tables

    _fleet_env(monkeypatch, three)
    df = nbllm.health_table()
    at = list(df.index).index("vllm")
    assert list(df.index)[at:at + 4] == ["vllm", "└ vllm 1", "└ vllm 2", "└ vllm 3"]
    assert list(df["status"].iloc[at:at + 4]) == ["available", "available", "down", "available"]
    assert three[1].url in df.loc["└ vllm 2", "base_url"] and "refused" in df.loc["└ vllm 2", "error"]
    health = nbllm.health_check(["vllm"])
    text = tables.to_text(tables.health_frame(health, tables.STATUS_COLUMNS))
    lines = text.splitlines()
    assert lines[1].startswith("vllm ") and "2/3 servers answering" in lines[1]
    assert lines[3].startswith("└ vllm 2") and "down" in lines[3]
    html = tables.to_html(tables.health_frame(health))
    assert "└ vllm 3" in html and html.count(">down<") == 1


def test_status_command_shows_the_servers(three, monkeypatch, capsys):
    from nbllm.cli import main

    _fleet_env(monkeypatch, three)
    main(["providers", "--status"])
    out = capsys.readouterr().out
    assert "└ vllm 1" in out and "└ vllm 3" in out and "2/3 servers answering" in out


# ---- the fleet at work (the pipeline picks a server per attempt) ---------------------------


def _chats(server) -> int:
    return len(server.chat_requests())


@pytest.fixture
def fleet3(make_server, monkeypatch):
    """Three answering servers, each at 20 ms and 4 slots, behind `vllm`."""
    servers = [make_server(latency=0.02, probe_latency=0, slots=4) for _ in range(3)]
    _fleet_env(monkeypatch, servers)
    return servers


def test_map_spreads_work_over_all_three(fleet3):
    values = [f"q{i}" for i in range(60)]
    result = nbllm.map(values, "{}", provider="vllm", concurrency=12, progress=False)
    assert list(result) == [f"Echo: q{i}" for i in range(60)]
    counts = [_chats(s) for s in fleet3]
    assert sum(counts) == 60 and all(c >= 10 for c in counts), counts
    assert all(s.peak_busy <= 4 for s in fleet3)


def test_one_server_dying_mid_map_loses_nothing(fleet3):
    """The second server dies on its 5th request: every answer is still there and right,
    the dead one's share went to the other two, and it is left out afterwards."""
    fleet3[1].set(die_after=5)
    values = [f"q{i}" for i in range(60)]
    result = nbllm.map(values, "{}", provider="vllm", concurrency=12, progress=False)
    assert result.attrs["nbllm"]["failed"] == 0
    assert list(result) == [f"Echo: q{i}" for i in range(60)]
    assert fleet3[1].dead.is_set() and _chats(fleet3[1]) <= 5 + 12  # at most what was in flight when it died
    answered = _chats(fleet3[0]) + _chats(fleet3[2])
    assert answered >= 60 - 4, [_chats(s) for s in fleet3]  # only its first 4 were answered by it
    assert fleet.is_out(get_registry().settings("vllm").servers[1])


def test_concurrent_ask_spreads_too(fleet3):
    with concurrent.futures.ThreadPoolExecutor(9) as pool:
        answers = list(pool.map(lambda i: nbllm.ask(f"hello {i}", provider="vllm"), range(18)))
    assert [a.text for a in answers] == [f"Echo: hello {i}" for i in range(18)]
    counts = [_chats(s) for s in fleet3]
    assert sum(counts) == 18 and all(c > 0 for c in counts), counts


def test_compare_over_the_same_fleet(fleet3, make_server, monkeypatch):
    other = make_server(reply="from lmstudio")
    monkeypatch.setenv("LMSTUDIO_BASE_URL", other.url + "/v1")
    nbllm.reinit()
    for _ in range(3):
        frame = nbllm.compare("which?", providers=["vllm", "lmstudio"])
        answers = dict(zip(frame["provider"], frame["answer"]))
        assert answers == {"vllm": "Echo: which?", "lmstudio": "from lmstudio"}, frame.to_dict("records")
    assert [_chats(s) for s in fleet3] == [1, 1, 1]  # three compares, one on each server


# ---- the test server's fleet modes ---------------------------------------------------------


def _post(url: str, timeout: float = 5.0) -> int:
    import json
    import urllib.request

    request = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status


def test_fake_server_slots_queue_the_requests_beyond_them(make_server):
    server = make_server(latency=0.1, slots=2)
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(lambda _: _post(server.url), range(6)))
    took = time.perf_counter() - started
    assert statuses == [200] * 6 and server.peak_busy == 2
    assert took >= 0.3 - 0.02, took  # three rounds of two


def test_fake_server_die_refuses_new_connections(make_server):
    import urllib.error

    server = make_server()
    assert _post(server.url) == 200
    server.die()
    server.dead.wait(1)
    time.sleep(0.2)  # the listening socket closes on another thread
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        _post(server.url, timeout=2)
