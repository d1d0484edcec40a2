"""The user's own endpoints: added by API, magic, command line or by editing nbllm.toml, then used."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from conftest import cli, nbllm_shell, reread, reset_nbllm, run_cell

import nbllm
from nbllm import catalog
from nbllm.errors import ConfigurationError
from nbllm.registry import get_registry


@pytest.fixture(autouse=True)
def files(endpoint_files: tuple[Path, Path]) -> tuple[Path, Path]:
    """The user file and the working directory's file, apart (conftest's `endpoint_files`)."""
    return endpoint_files


def auth(request: dict) -> str | None:
    return {k.lower(): v for k, v in request["headers"].items()}.get("authorization")


# ---- adding, four ways, then answering ----------------------------------------------------

def test_added_by_api_answers_ask_and_persists(files, fake_server):
    user_file, _ = files
    nbllm.add_provider("gpu", base_url=fake_server.url + "/v1")
    assert 'base_url = "' + fake_server.url + '/v1"' in user_file.read_text()
    answer = nbllm.ask("hello", provider="gpu")
    assert answer.text == "Echo: hello" and answer.provider == "gpu"
    assert answer.model == "fake-model"  # no model given: a local endpoint's is detected
    reset_nbllm()  # a new process reads it from the file
    assert "gpu" in nbllm.providers()
    assert nbllm.ask("again", provider="gpu").text == "Echo: again"


def test_added_by_magic_answers_llm_cell(files, fake_server):
    user_file, _ = files
    with nbllm_shell() as shell:
        _, _, out = run_cell(shell, f"%llm_providers --add gpu --base-url {fake_server.url}/v1 --model fake-model")
        assert "gpu added" in out and str(user_file) in out
        result, outputs, _ = run_cell(shell, "%%llm -p gpu --no-stream -f text\nhi from a cell")
        assert result.success and outputs[-1]["data"]["text/plain"] == "Echo: hi from a cell"
        assert outputs[-1]["metadata"]["nbllm"]["provider"] == "gpu"
    assert 'model = "fake-model"' in user_file.read_text()
    assert fake_server.chat_requests()[-1]["body"]["model"] == "fake-model"


def test_added_by_cli_is_seen_by_a_later_process(files, fake_server, capsys):
    user_file, _ = files
    code, out, err = cli(capsys, "--add", "gpu", "--base-url", fake_server.url + "/v1", "--label", "Lab GPU")
    assert code == 0 and err == "" and "gpu added" in out
    reset_nbllm()
    code, out, _ = cli(capsys, "--status", "--json")
    assert code == 0 and json.loads(out)["providers"]["gpu"]["status"] == "available"
    assert get_registry().spec("gpu").label == "Lab GPU"


def test_added_by_editing_the_file_then_reinit(files, fake_server):
    user_file, _ = files
    assert "gpu" not in nbllm.providers()
    user_file.write_text(f'# my lab\n[providers.gpu]\nbase_url = "{fake_server.url}/v1"\n')
    assert reread() == []
    assert "gpu" in nbllm.providers()
    assert nbllm.ask("edited", provider="gpu").text == "Echo: edited"
    health = nbllm.health_check(["gpu"])["gpu"]
    assert health.available and health.model_id == "fake-model"


def test_an_endpoint_reads_its_variables_and_they_win_over_the_file(files, fake_server, make_server, monkeypatch):
    other = make_server(reply="from the env's server")
    nbllm.add_provider("gpu", base_url=fake_server.url + "/v1", model="file-model")
    monkeypatch.setenv("GPU_BASE_URL", other.url + "/v1")
    monkeypatch.setenv("GPU_MODEL", "env-model")
    monkeypatch.setenv("GPU_API_KEY", "sk-gpu-secret-123456")
    reread()
    answer = nbllm.ask("x", provider="gpu")
    assert answer.text == "from the env's server" and answer.model == "env-model"
    assert auth(other.chat_requests()[-1]) == "Bearer sk-gpu-secret-123456"
    assert not fake_server.chat_requests()
    rows = {row["variable"]: row for row in get_registry().variables("gpu")}
    assert rows["GPU_MODEL"]["value"] == "env-model" and rows["GPU_API_KEY"]["value"] == "********"


def test_key_env_names_another_variable(files, fake_server, monkeypatch):
    monkeypatch.setenv("LAB_TOKEN", "lab-token-abcdef")
    nbllm.add_provider("gpu", base_url=fake_server.url + "/v1", key_env="LAB_TOKEN")
    nbllm.ask("x", provider="gpu")
    assert auth(fake_server.chat_requests()[-1]) == "Bearer lab-token-abcdef"


def test_a_cloud_endpoint_needs_a_key_and_a_model(files):
    with pytest.raises(ConfigurationError, match="needs a model"):
        nbllm.add_provider("box", base_url="https://box.example/v1", kind="cloud")
    nbllm.add_provider("box", base_url="https://box.example/v1", kind="cloud", model="m")
    health = nbllm.health_check(["box"])["box"]
    assert health.status == "not configured" and "BOX_API_KEY" in health.error


def test_anthropic_protocol_builds_an_anthropic_model(files):
    nbllm.add_provider("claudeish", base_url="http://127.0.0.1:9", protocol="anthropic", model="m")
    assert type(nbllm.get_model("claudeish")).__name__ == "AnthropicModel"
    assert type(nbllm.get_model("lmstudio")).__name__ != "AnthropicModel"


def test_a_fleet_is_stored_comma_joined(files):
    user_file, _ = files
    nbllm.add_provider("fleet", base_url="http://a:8000/v1, http://b:8000/v1")
    assert get_registry().spec("fleet").base_url == "http://a:8000/v1,http://b:8000/v1"
    assert 'base_url = ["http://a:8000/v1", "http://b:8000/v1"]' in user_file.read_text()
    reset_nbllm()
    assert get_registry().spec("fleet").base_url == "http://a:8000/v1,http://b:8000/v1"


def test_the_working_directorys_file_wins(files, fake_server, make_server):
    user_file, work_file = files
    other = make_server(reply="from the project")
    user_file.write_text(f'[providers.gpu]\nbase_url = "{fake_server.url}/v1"\n'
                         f'[providers.only_user]\nbase_url = "{fake_server.url}/v1"\n')
    work_file.write_text(f'[providers.gpu]\nbase_url = "{other.url}/v1"\n')
    assert reread() == []
    assert nbllm.ask("x", provider="gpu").text == "from the project"
    assert "only_user" in nbllm.providers()
    # A change to gpu goes where it is read from: the working directory's file.
    nbllm.add_provider("gpu", base_url=other.url + "/v1", model="m2")
    assert 'model = "m2"' in work_file.read_text() and "m2" not in user_file.read_text()
    assert sorted(nbllm.remove_provider("gpu")) == sorted([str(user_file), str(work_file)])
    assert "gpu" not in user_file.read_text() and "gpu" not in work_file.read_text()
    reset_nbllm()
    assert "gpu" not in nbllm.providers() and "only_user" in nbllm.providers()


def test_save_false_lasts_for_this_process(files):
    user_file, _ = files
    nbllm.add_provider("gpu", base_url="http://127.0.0.1:9/v1", save=False)
    assert "gpu" in nbllm.providers() and not user_file.exists()
    reread()
    assert "gpu" in nbllm.providers() and not user_file.exists()  # re-reading the files keeps it
    reset_nbllm()  # a new process
    assert "gpu" not in nbllm.providers()


# ---- the file keeps its comments ----------------------------------------------------------

def test_comments_survive_add_and_remove(files, capsys):
    user_file, _ = files
    user_file.write_text(
        "# nbllm endpoints, by hand\n\n"
        "[providers.old]  # the old box\n"
        'base_url = "http://old:8000/v1"  # do not touch\n\n'
        "# the lab server\n"
        "[providers.lab]\n"
        'base_url = "http://lab:8000/v1"\n\n'
        "# shortcuts\n"
        "[aliases]\n"
        'quick = "lab"  # fast enough\n'
    )
    reread()
    code, _, err = cli(capsys, "--add", "new", "--base-url", "http://new:8000/v1")
    assert code == 0, err
    code, _, err = cli(capsys, "--add", "lab", "--base-url", "http://lab2:8000/v1", "--model", "m")
    assert code == 0, err
    text = user_file.read_text()
    for kept in ("# nbllm endpoints, by hand", "# the old box", "# do not touch", "# the lab server",
                 "# shortcuts", "# fast enough"):
        assert kept in text
    assert 'base_url = "http://lab2:8000/v1"' in text and 'model = "m"' in text
    code, _, err = cli(capsys, "--remove", "lab")
    assert code == 0, err
    text = user_file.read_text()
    assert "[providers.lab]" not in text and "# the lab server" not in text  # its own comment goes with it
    for kept in ("# nbllm endpoints, by hand", "# the old box", "# do not touch", "# shortcuts", "# fast enough"):
        assert kept in text
    assert text.index("# shortcuts") < text.index("[aliases]")
    reset_nbllm()
    assert {"old", "new"} <= set(nbllm.providers()) and "lab" not in nbllm.providers()


def test_an_entry_appended_after_the_aliases_can_be_removed(files, capsys):
    """`[providers.X]` after `[aliases]` (appending by hand gives it) splits the section in two."""
    user_file, _ = files
    user_file.write_text(
        "# my endpoints\n"
        '[providers.gpu]\nbase_url = "http://gpu:8000/v1"\n\n'
        '[aliases]\nfast = "lab2"  # the quick one\n\n'
        "# added later, by hand\n"
        '[providers.lab2]\nbase_url = "http://lab2:8000/v1"\n\n'
        "# the third\n"
        '[providers.lab3]\nbase_url = "http://lab3:8000/v1"\n'
    )
    assert reread() == []
    assert nbllm.remove_provider("gpu") == [str(user_file)]
    assert user_file.read_text() == (
        "# my endpoints\n"
        '[aliases]\nfast = "lab2"  # the quick one\n\n'
        "# added later, by hand\n"
        '[providers.lab2]\nbase_url = "http://lab2:8000/v1"\n\n'
        "# the third\n"
        '[providers.lab3]\nbase_url = "http://lab3:8000/v1"\n'
    )
    code, out, err = cli(capsys, "--remove", "lab2")
    assert code == 0 and err == "" and "lab2 removed from" in out, err
    assert user_file.read_text() == (
        "# my endpoints\n"
        '[aliases]\nfast = "lab2"  # the quick one\n\n'
        "# the third\n"
        '[providers.lab3]\nbase_url = "http://lab3:8000/v1"\n'
    )
    reset_nbllm()
    assert "lab3" in nbllm.providers() and not {"gpu", "lab2"} & set(nbllm.providers())


def test_a_file_nbllm_cannot_edit_is_one_line_and_left_alone(files, capsys):
    user_file, _ = files
    text = 'providers = { gpu = { base_url = "http://gpu:1/v1" }, ok = { base_url = "http://ok:1/v1" } }\n'
    user_file.write_text(text)
    assert reread() == []
    code, out, err = cli(capsys, "--remove", "gpu")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert str(user_file) in err and "by hand" in err and "nothing was changed" in err
    with pytest.raises(ConfigurationError, match="by hand"):
        nbllm.add_provider("new", base_url="http://new:1/v1")
    assert user_file.read_text() == text and "gpu" in nbllm.providers()


def test_a_new_table_gets_a_blank_line_before_and_after_it(files):
    user_file, _ = files
    nbllm.add_provider("a", base_url="http://a:1/v1")
    nbllm.add_provider("b", base_url="http://b:1/v1")
    nbllm.alias("fast", "a")
    nbllm.alias("robust", "a,b", on="any")
    nbllm.add_provider("c", base_url="http://c:1/v1")  # goes before [aliases]
    assert user_file.read_text() == (
        '[providers.a]\nbase_url = "http://a:1/v1"\nkind = "local"\nprotocol = "openai"\n\n'
        '[providers.b]\nbase_url = "http://b:1/v1"\nkind = "local"\nprotocol = "openai"\n\n'
        '[providers.c]\nbase_url = "http://c:1/v1"\nkind = "local"\nprotocol = "openai"\n\n'
        '[aliases]\nfast = "a"\n\n'
        '[aliases.robust]\ntarget = "a,b"\non = "any"\n'
    )
    # The comment right above [aliases] is about it: a new endpoint goes above that comment.
    user_file.write_text('[providers.lab]\nbase_url = "http://lab:1/v1"\n# shortcuts\n[aliases]\nq = "lab"\n')
    reread()
    nbllm.add_provider("new", base_url="http://new:1/v1", kind="local")
    assert user_file.read_text() == (
        '[providers.lab]\nbase_url = "http://lab:1/v1"\n\n'
        '[providers.new]\nbase_url = "http://new:1/v1"\nkind = "local"\nprotocol = "openai"\n\n'
        '# shortcuts\n[aliases]\nq = "lab"\n'
    )


# ---- bad entries: one warning each, naming file and entry --------------------------------

@pytest.mark.parametrize("entry, words", [
    ('kind = "local"', "base_url is missing"),
    ('base_url = "ftp://gpu"', "base_url"),
    ('base_url = "http://gpu:8000/v1"\nkind = "remote"', "kind = 'remote' is not one of local, cloud"),
    ('base_url = "http://gpu:8000/v1"\nprotocol = "grpc"', "protocol"),
    ('base_url = "http://gpu:8000/v1"\nkind = "cloud"', "needs a model"),
    ('base_url = "http://gpu:8000/v1"\nkey_env = "not a name"', "key_env"),
    ('base_url = 8000', "base_url must be a URL"),
])
def test_each_bad_entry_is_one_warning_and_ignored(files, entry, words):
    user_file, _ = files
    user_file.write_text(f"[providers.gpu]\n{entry}\n[providers.fine]\nbase_url = \"http://fine:1/v1\"\n")
    said = reread()
    assert len(said) == 1, said
    assert str(user_file) in said[0] and "[providers.gpu]" in said[0] and words in said[0]
    assert "ignored" in said[0]
    assert "gpu" not in nbllm.providers() and "fine" in nbllm.providers()
    assert said[0] in get_registry().endpoint_problems


def test_an_unknown_key_is_one_warning_and_the_rest_is_used(files):
    user_file, _ = files
    user_file.write_text('[providers.gpu]\nbase_url = "http://gpu:1/v1"\nbase_ur = "typo"\nmodle = "x"\n')
    said = reread()
    assert len(said) == 1 and "'base_ur'" in said[0] and "'modle'" in said[0] and "rest of the entry" in said[0]
    assert "gpu" in nbllm.providers()


def test_an_api_key_in_the_file_is_refused_and_never_shown(files):
    user_file, _ = files
    user_file.write_text('[providers.gpu]\nbase_url = "http://gpu:1/v1"\napi_key = "sk-file-secret-9876543"\n')
    said = reread()
    assert len(said) == 1 and "GPU_API_KEY" in said[0] and "environment or .env" in said[0]
    assert "sk-file-secret" not in said[0]
    assert not get_registry().settings("gpu").has_key


@pytest.mark.parametrize("name", ["openai", "auto", "Gpu", "my-gpu", "2gpu"])
def test_an_entry_may_not_take_a_providers_name_or_a_bad_one(files, name):
    user_file, _ = files
    user_file.write_text(f'[providers."{name}"]\nbase_url = "http://gpu:1/v1"\n')
    said = reread()
    assert len(said) == 1 and f"[providers.{name}]" in said[0]
    assert catalog.get_spec("openai").origin == "builtin"
    assert get_registry().spec("openai").base_url == "https://api.openai.com/v1"


def test_invalid_toml_is_one_warning_with_line_and_column(files):
    user_file, _ = files
    user_file.write_text('[providers.gpu]\nbase_url = "http://gpu:1/v1"\nkind = \n')
    said = reread()
    assert len(said) == 1 and str(user_file) in said[0] and "not valid TOML" in said[0]
    assert "line 3" in said[0] and "column" in said[0]
    assert "gpu" not in nbllm.providers()
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        nbllm.add_provider("other", base_url="http://o:1/v1")
    assert "kind = \n" in user_file.read_text()  # nothing was changed


def test_a_file_that_is_not_utf8_is_one_warning(files):
    user_file, _ = files
    user_file.write_bytes(b'[providers.gpu]\nbase_url = "http://gp\xff"\n')
    said = reread()
    assert len(said) == 1 and "not UTF-8" in said[0]


def test_url_passwords_never_show(files, capsys, monkeypatch):
    user_file, _ = files
    nbllm.add_provider("gpu", base_url="http://127.0.0.1:9/v1")
    monkeypatch.setenv("GPU_BASE_URL", "http://me:hunter2pass@127.0.0.1:9/v1")  # the environment may hold one
    reread()
    for argv in (("--status",), ("--list",), ("--health-check",), ("--status", "--json"), ("--list", "--json")):
        _, out, err = cli(capsys, *argv)
        assert "gpu" in out and "hunter2pass" not in out + err, argv
    user_file.write_text('[providers.gpu]\nbase_url = "ftp://me:hunter2pass@gpu"\n')
    said = reread()
    assert len(said) == 1 and "hunter2pass" not in said[0]


def test_a_url_password_is_never_written_to_the_file(files, capsys):
    user_file, _ = files
    code, out, err = cli(capsys, "--add", "secret", "--base-url", "http://user:sk-secret-pw-123@127.0.0.1:9/v1")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "without user:password@" in err and "SECRET_API_KEY" in err and "SECRET_BASE_URL" in err
    assert "sk-secret-pw" not in out + err and not user_file.exists() and "secret" not in nbllm.providers()
    with nbllm_shell() as shell:
        url = "http://user:sk-secret-pw-123@127.0.0.1:9/v1"
        _, _, out = run_cell(shell, f"%llm_providers --add secret --base-url {url}")
        assert "UsageError" in out and "SECRET_API_KEY" in out and "sk-secret-pw" not in out
    with pytest.raises(ConfigurationError, match="never go in nbllm.toml") as raised:
        nbllm.add_provider("secret", base_url="http://user:sk-secret-pw-123@127.0.0.1:9/v1")
    assert "sk-secret-pw" not in str(raised.value) and not user_file.exists()
    # For this process only nothing is written, so the URL is used as given.
    nbllm.add_provider("secret", base_url="http://user:sk-secret-pw-123@127.0.0.1:9/v1", save=False)
    assert "sk-secret-pw-123@" in get_registry().settings("secret").base_url and not user_file.exists()


def test_a_url_password_in_a_hand_written_file_is_one_warning_and_not_used(files, fake_server):
    user_file, _ = files
    host = fake_server.url.split("://", 1)[1]
    user_file.write_text(f'[providers.gpu]\nbase_url = "http://me:hunter2pass@{host}/v1"\n')
    said = reread()
    assert len(said) == 1, said
    assert str(user_file) in said[0] and "[providers.gpu]" in said[0] and "user:password@" in said[0]
    assert "GPU_API_KEY" in said[0] and "GPU_BASE_URL" in said[0] and "hunter2pass" not in said[0]
    assert get_registry().settings("gpu").base_url == fake_server.url + "/v1"
    assert nbllm.ask("hi", provider="gpu").text == "Echo: hi"  # the URL without them is used
    request = json.dumps(fake_server.chat_requests()[-1])
    assert "hunter2pass" not in request and base64.b64encode(b"me:hunter2pass").decode() not in request


# ---- a model written in the file is a choice -----------------------------------------------

def test_a_model_written_in_the_file_wins_over_the_detected_one(files, fake_server, capsys):
    user_file, _ = files
    user_file.write_text(f'[providers.handmade]\nbase_url = "{fake_server.url}/v1"\nmodel = "hand-model"\n')
    assert reread() == []
    assert get_registry().settings("handmade").model_is_default is False
    answer = nbllm.ask("hi", provider="handmade")
    assert answer.model == "hand-model"
    assert fake_server.chat_requests()[-1]["body"]["model"] == "hand-model"  # the server lists fake-model
    code, out, _ = cli(capsys, "--status", "--json")
    assert code == 0 and json.loads(out)["providers"]["handmade"]["model_id"] == "hand-model"
    nbllm.add_provider("bymagic", base_url=fake_server.url + "/v1", model="chosen-model", save=False)
    assert nbllm.ask("x", provider="bymagic").model == "chosen-model"
    user_file.write_text(f'[providers.handmade]\nbase_url = "{fake_server.url}/v1"\n')
    reread()
    assert get_registry().settings("handmade").model_is_default is True
    assert nbllm.ask("x", provider="handmade").model == "fake-model"  # no model written: detected


# ---- removing ----------------------------------------------------------------------------

def test_a_builtin_cannot_be_removed(files, capsys):
    with pytest.raises(ConfigurationError, match=r"built in .*nbllm\.disable\('openai'\)"):
        nbllm.remove_provider("openai")
    assert "openai" in nbllm.providers()
    code, _, err = cli(capsys, "--remove", "ollama")
    assert code == 2 and "disable it instead" in err and len(err.strip().splitlines()) == 1


def test_removing_an_unknown_endpoint_lists_yours(files):
    nbllm.add_provider("gpu", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ConfigurationError, match="Your endpoints: gpu"):
        nbllm.remove_provider("nope")


def test_removing_the_default_falls_back_to_auto(files, fake_server):
    nbllm.add_provider("gpu", base_url=fake_server.url + "/v1")
    nbllm.use("gpu")
    nbllm.remove_provider("gpu")
    assert nbllm.current().provider == "auto"


def test_a_broken_entry_can_still_be_removed(files):
    user_file, _ = files
    user_file.write_text('[providers.gpu]\nkind = "local"\n[providers.ok]\nbase_url = "http://ok:1/v1"\n')
    reread()
    assert nbllm.remove_provider("gpu") == [str(user_file)]
    assert "gpu" not in user_file.read_text() and "[providers.ok]" in user_file.read_text()


def test_removing_the_saved_default_clears_it(files, capsys):
    user_dir = files[0].parent
    nbllm.add_provider("gpu", base_url="http://127.0.0.1:9/v1")
    code, _, err = cli(capsys, "--use", "gpu", "--model", "m")
    assert code == 0, err
    assert json.loads((user_dir / "config.json").read_text())["default"]["provider"] == "gpu"
    reset_nbllm()  # a later process starts with the saved default
    code, out, err = cli(capsys, "--remove", "gpu")
    assert code == 0 and err == "", err
    assert "default" not in json.loads((user_dir / "config.json").read_text())
    reset_nbllm()
    assert reread() == []  # no "the saved default 'gpu' is not a known provider" any more
    assert nbllm.current().provider == "auto"
    # A removal for this process only leaves the saved default (the endpoint is back next time).
    nbllm.add_provider("gpu", base_url="http://127.0.0.1:9/v1")
    nbllm.use("gpu,embedded", save=True)
    nbllm.remove_provider("gpu", save=False)
    assert json.loads((user_dir / "config.json").read_text())["default"]["provider"] == "gpu,embedded"
    reset_nbllm()
    nbllm.remove_provider("gpu")  # a chain naming it is cleared too
    assert "default" not in json.loads((user_dir / "config.json").read_text())


def test_removing_another_endpoint_keeps_the_saved_default(files, capsys):
    user_dir = files[0].parent
    nbllm.add_provider("gpu", base_url="http://127.0.0.1:9/v1")
    nbllm.add_provider("other", base_url="http://127.0.0.1:9/v1")
    nbllm.use("gpu", save=True)
    nbllm.remove_provider("other")
    assert json.loads((user_dir / "config.json").read_text())["default"]["provider"] == "gpu"
    assert nbllm.current().provider == "gpu"


# ---- faces --------------------------------------------------------------------------------

def test_face_mistakes_are_one_line(files, capsys):
    for argv, words in [
        (("--add", "gpu"), "needs --base-url"),
        (("--base-url", "http://x/v1"), "--base-url goes with --add"),
        (("--kind", "cloud"), "--kind goes with --add"),
        (("--add", "gpu", "--base-url", "nope"), "expected an http"),
        (("--add", "gpu", "--base-url", "http://x/v1", "--kind", "remote"), "not one of local, cloud"),
    ]:
        code, out, err = cli(capsys, *argv)
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert "gpu" not in nbllm.providers()


def test_magic_mistakes_are_usage_errors_and_the_kernel_goes_on(files):
    with nbllm_shell() as shell:
        _, _, out = run_cell(shell, "%llm_providers --add gpu --base-url ftp://x")
        assert "UsageError" in out and "expected an http" in out and "Traceback" not in out
        _, _, out = run_cell(shell, "%llm_providers --remove openai")
        assert "UsageError" in out and "disable it instead" in out
        result, _, _ = run_cell(shell, "1 + 1")
        assert result.result == 2


def test_list_shows_the_endpoints_files_and_the_endpoints_variables(files, capsys):
    user_file, work_file = files
    code, out, _ = cli(capsys, "--list")
    assert f"{user_file} (not found)" in out and f"{work_file} (not found)" in out
    nbllm.add_provider("gpu", base_url="http://127.0.0.1:9/v1")
    code, out, _ = cli(capsys, "--list")
    assert code == 0 and f"{user_file} (exists)" in out
    for variable in ("GPU_API_KEY", "GPU_MODEL", "GPU_BASE_URL"):
        assert variable in out
    code, out, _ = cli(capsys, "--list", "--all")  # every variable, the shared defaults too
    for variable in ("GPU_ENABLED", "GPU_TIMEOUT", "GPU_PRICE_INPUT"):
        assert variable in out
    code, out, _ = cli(capsys, "--list", "--json")
    data = json.loads(out)
    assert {"path": str(user_file), "exists": True} in data["endpoints_files"]


def test_list_shows_one_file_when_the_working_directory_is_the_config_dir(files, capsys, monkeypatch):
    user_file, _ = files
    monkeypatch.chdir(user_file.parent)
    reset_nbllm()
    nbllm.add_provider("gpu", base_url="http://127.0.0.1:9/v1")
    code, out, _ = cli(capsys, "--list")
    assert code == 0 and out.count(str(user_file)) == 1, out
    code, out, _ = cli(capsys, "--list", "--json")
    assert json.loads(out)["endpoints_files"] == [{"path": str(user_file), "exists": True}]
    assert nbllm.remove_provider("gpu") == [str(user_file)]


def test_an_endpoint_can_be_disabled_like_a_builtin(files, capsys):
    nbllm.add_provider("gpu", base_url="http://127.0.0.1:9/v1")
    code, _, _ = cli(capsys, "--disable", "gpu")
    assert code == 0
    reset_nbllm()
    assert not get_registry().settings("gpu").enabled
    assert nbllm.health_check(["gpu"])["gpu"].status == "disabled"


def test_the_documented_example_file_reads_without_a_warning(files):
    """The format in nbllm.endpoints' docstring (the README's source) is itself valid."""
    from nbllm import endpoints

    doc = endpoints.__doc__
    example = doc[doc.index("    # ~/.config"):doc.index("An endpoint is")]
    user_file, _ = files
    user_file.write_text("\n".join(line[4:] for line in example.splitlines()) + "\n")
    assert reread() == []
    spec = get_registry().spec("gpu")
    assert (spec.kind, spec.builder, spec.key_env, spec.default_model, spec.label) == (
        "local", "openai_compatible", ("LAB_TOKEN",), "qwen3-8b", "Lab GPU")
    assert nbllm.aliases() == {"fast": "groq:llama-3.1-8b-instant", "local": "ollama,llamacpp,embedded",
                               "robust": "openai,embedded"}


def test_auto_probes_a_local_endpoint(files, fake_server):
    nbllm.add_provider("gpu", base_url=fake_server.url + "/v1")
    answer = nbllm.ask("who answers?")  # the default is auto; nothing else local answers in tests
    assert answer.provider == "gpu" and answer.text == "Echo: who answers?"


# ---- key_env only from the user's own file ------------------------------------------------

def _keys_seen(server) -> list[str]:
    """Every Authorization header the server was sent, by any request (probes, listings, chats)."""
    return [a for a in (auth(r) for r in server.requests) if a]


def test_key_env_in_the_working_directorys_file_never_sends_that_key(files, fake_server, capsys, monkeypatch):
    """A cloned repo's nbllm.toml must not route the user's OpenAI key to a host of its choice."""
    user_file, work_file = files
    secret = "sk-openai-secret-7a7a7a7a"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    work_file.write_text(f'[providers.lab]\nbase_url = "{fake_server.url}/v1"\nkey_env = "OPENAI_API_KEY"\n')
    said = reread()
    assert len(said) == 1, said
    assert str(work_file) in said[0] and "[providers.lab]" in said[0] and "key_env" in said[0]
    assert str(user_file) in said[0] and "LAB_API_KEY" in said[0] and secret not in said[0]
    assert get_registry().spec("lab").key_env == () and not get_registry().settings("lab").has_key
    assert nbllm.health_check()["lab"].available  # the rest of the entry is used
    code, out, _ = cli(capsys, "--status")
    assert code == 0 and "lab" in out
    assert "fake-model" in set(nbllm.models("lab")["model"])
    nbllm.ask("hi", provider="lab")
    monkeypatch.setenv("OPENAI_ENABLED", "false")  # the key stays set; auto now probes local servers
    reread()
    answer = nbllm.ask("who?", provider="auto")
    assert answer.provider == "lab"
    assert len(fake_server.requests) >= 5 and not any(secret in a for a in _keys_seen(fake_server))
    assert secret not in json.dumps(fake_server.requests)
    # The same entry in the user's own file is the user's choice: that key is sent.
    work_file.unlink()
    user_file.write_text(f'[providers.lab]\nbase_url = "{fake_server.url}/v1"\nkey_env = "OPENAI_API_KEY"\n')
    assert reread() == []
    fake_server.requests.clear()
    nbllm.health_check(["lab"])
    assert set(_keys_seen(fake_server)) == {f"Bearer {secret}"}


@pytest.mark.parametrize("name, key", [("xai", "XAI_API_KEY"), ("google", "GOOGLE_API_KEY")])
def test_an_endpoint_may_not_be_named_so_it_reads_another_providers_key(files, fake_server, monkeypatch, name, key):
    """`[providers.xai]` would read XAI_API_KEY (grok's key) as its own NAME_API_KEY."""
    _, work_file = files
    monkeypatch.setenv(key, "sk-other-secret-3b3b3b3b")
    work_file.write_text(f'[providers.{name}]\nbase_url = "{fake_server.url}/v1"\n')
    said = reread()
    assert len(said) == 1 and f"[providers.{name}]" in said[0] and key in said[0] and "ignored" in said[0]
    assert name not in nbllm.providers()
    nbllm.health_check()
    assert not fake_server.requests  # nothing of that name exists to be probed
    with pytest.raises(ConfigurationError, match=key):
        nbllm.add_provider(name, base_url=fake_server.url + "/v1")


def test_add_with_another_providers_key_says_where_that_key_goes(files, fake_server, capsys):
    code, out, err = cli(capsys, "--add", "lab", "--base-url", fake_server.url + "/v1", "--key-env", "OPENAI_API_KEY")
    assert code == 0, err
    assert "lab will receive OPENAI_API_KEY (openai's key)" in out
    code, out, err = cli(capsys, "--add", "box", "--base-url", fake_server.url + "/v1", "--key-env", "LAB_TOKEN")
    assert code == 0 and "will receive" not in out
    assert get_registry().spec("lab").key_env == ("OPENAI_API_KEY",)


def test_key_env_cannot_be_saved_where_it_would_not_be_read(files, fake_server):
    user_file, work_file = files
    work_file.write_text(f'[providers.lab]\nbase_url = "{fake_server.url}/v1"\n')
    reread()
    with pytest.raises(ConfigurationError, match="key_env") as raised:
        nbllm.add_provider("lab", base_url=fake_server.url + "/v1", key_env="LAB_TOKEN")
    assert str(user_file) in str(raised.value) and "LAB_API_KEY" in str(raised.value)
    assert "key_env" not in work_file.read_text()
    nbllm.add_provider("lab", base_url=fake_server.url + "/v1", key_env="LAB_TOKEN", save=False)
    assert get_registry().spec("lab").key_env == ("LAB_TOKEN",)


# ---- save=False lasts for the process: reinit keeps it ------------------------------------

def test_save_false_survives_reinit_with_the_default_naming_it(files, fake_server):
    user_file, _ = files
    nbllm.add_provider("gpu", base_url=fake_server.url + "/v1", save=False)
    nbllm.use("gpu")
    assert reread() == []
    assert "gpu" in nbllm.providers() and nbllm.current().provider == "gpu" and not user_file.exists()
    assert nbllm.ask("x").provider == "gpu"
    # A removal for this process only lasts through reinit too, while the file keeps the entry.
    nbllm.add_provider("box", base_url=fake_server.url + "/v1")
    nbllm.remove_provider("box", save=False)
    reread()
    assert "box" not in nbllm.providers() and "[providers.box]" in user_file.read_text()
    nbllm.add_provider("box", base_url=fake_server.url + "/v1")  # saved again: back for good
    reread()
    assert "box" in nbllm.providers()
    reset_nbllm()  # a new process has only what the files hold
    assert "gpu" not in nbllm.providers() and "box" in nbllm.providers()


# ---- a fleet list in the file is as lenient as {P}_BASE_URL --------------------------------

def test_one_bad_url_in_a_file_fleet_is_left_out_with_one_warning(files, fake_server, make_server):
    user_file, _ = files
    other = make_server()
    user_file.write_text(f'[providers.fleet]\nbase_url = ["{fake_server.url}/v1", "ftp://typo", "{other.url}/v1"]\n'
                         f'[providers.none]\nbase_url = ["ftp://a", "nope"]\n')
    said = reread()
    assert len(said) == 2, said
    fleet_line = next(s for s in said if "[providers.fleet]" in s)
    assert "'ftp://typo'" in fleet_line and "left out" in fleet_line and "rest of the entry" in fleet_line
    assert get_registry().settings("fleet").servers == (fake_server.url + "/v1", other.url + "/v1")
    assert "fleet" in nbllm.providers() and "none" not in nbllm.providers()
    assert "ignored" in next(s for s in said if "[providers.none]" in s)
    with pytest.raises(ConfigurationError, match="'ftp://typo'"):  # a face's --base-url stays strict
        nbllm.add_provider("typo", base_url=f"{fake_server.url}/v1,ftp://typo")
    assert "typo" not in nbllm.providers()


# ---- a 401 names the variable the key came from ---------------------------------------------

def test_a_refused_key_set_through_key_env_names_that_variable(files, fake_server, monkeypatch):
    from nbllm.errors import ModelError

    monkeypatch.setenv("LAB_TOKEN", "lab-token-wrong-1234")
    nbllm.add_provider("gpu", base_url=fake_server.url + "/v1", key_env="LAB_TOKEN", model="m")
    fake_server.set(mode="error", status=401)
    with pytest.raises(ModelError) as raised:
        nbllm.ask("x", provider="gpu")
    assert "GPU_API_KEY" in str(raised.value) and "LAB_TOKEN" in str(raised.value)
    assert "lab-token-wrong" not in str(raised.value)


# ---- the default after a removal or disable -------------------------------------------------

def test_a_default_that_no_longer_resolves_falls_back_to_auto_with_one_warning(files, fake_server):
    import warnings

    from nbllm.config import NbllmConfigWarning

    nbllm.add_provider("gpu", base_url=fake_server.url + "/v1")
    nbllm.alias("fast", "gpu")
    nbllm.use("fast")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nbllm.remove_provider("gpu")  # the default names it only through the alias
    said = [str(w.message) for w in caught if issubclass(w.category, NbllmConfigWarning)]
    assert nbllm.current().provider == "auto"
    assert len(said) == 1 and "'fast'" in said[0] and "'auto'" in said[0], said
    nbllm.add_provider("gpu", base_url=fake_server.url + "/v1")
    nbllm.alias("solo", "gpu")
    nbllm.use("solo")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nbllm.disable("gpu")
    said = [str(w.message) for w in caught if issubclass(w.category, NbllmConfigWarning)]
    assert nbllm.current().provider == "auto" and len(said) == 1 and "'solo'" in said[0]


def test_remove_says_when_the_saved_default_was_cleared(files, capsys):
    nbllm.add_provider("gpu", base_url="http://127.0.0.1:9/v1")
    nbllm.add_provider("box", base_url="http://127.0.0.1:9/v1")
    nbllm.use("gpu", save=True)
    code, out, err = cli(capsys, "--remove", "box")
    assert code == 0 and "saved default" not in out
    code, out, err = cli(capsys, "--remove", "gpu")
    assert code == 0 and "gpu was the saved default: cleared (choose another with --use NAME)" in out, out


def test_the_working_directorys_file_cannot_move_a_keyed_endpoint_elsewhere(files, fake_server, make_server,
                                                                           monkeypatch):
    """A cloned project's nbllm.toml must not redirect your endpoint, and with it your key, to its server."""
    user_file, work_file = files
    thief = make_server(reply="stolen")
    monkeypatch.setenv("GPU_API_KEY", "sk-gpu-secret-0123456789abcdef")
    user_file.write_text(f'[providers.gpu]\nbase_url = "{fake_server.url}/v1"\n')
    work_file.write_text(f'[providers.gpu]\nbase_url = "{thief.url}/v1"\n')
    problems = reread()
    assert len(problems) == 1 and "moves your endpoint 'gpu'" in problems[0] and "GPU_API_KEY" in problems[0]
    assert nbllm.ask("x", provider="gpu").text == "Echo: x"
    nbllm.health_check()
    assert thief.requests == []
