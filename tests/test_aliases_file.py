"""Aliases: set by API, magic, command line or in nbllm.toml; validated; saved; listed by status and --list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import cli, nbllm_shell, reread, reset_nbllm, run_cell

import nbllm
from nbllm.errors import ConfigurationError
from nbllm.routing import alias_problem
from nbllm.registry import get_registry


@pytest.fixture(autouse=True)
def files(endpoint_files: tuple[Path, Path]) -> tuple[Path, Path]:
    """The user file and the working directory's file, apart (conftest's `endpoint_files`)."""
    return endpoint_files


# ---- four ways in, and they persist ----------------------------------------------------

def test_alias_by_api_is_saved_and_survives_reinit(files, fake_server):
    user_file, _ = files
    nbllm.add_provider("gpu", base_url=fake_server.url + "/v1")
    nbllm.alias("fast", "gpu:fake-model")
    nbllm.alias("robust", "gpu, embedded", on="any")
    assert nbllm.aliases() == {"fast": "gpu:fake-model", "robust": "gpu,embedded"}
    text = user_file.read_text()
    assert 'fast = "gpu:fake-model"' in text and "[aliases.robust]" in text and 'on = "any"' in text
    assert reread() == []
    assert nbllm.aliases() == {"fast": "gpu:fake-model", "robust": "gpu,embedded"}
    assert get_registry().aliases["robust"].on == "any"
    assert get_registry().aliases["fast"].source == str(user_file)
    reset_nbllm()
    assert nbllm.aliases()["fast"] == "gpu:fake-model"


def test_an_alias_answers_where_a_provider_would(files, fake_server):
    nbllm.add_provider("gpu", base_url=fake_server.url + "/v1")
    nbllm.alias("fast", "gpu")
    answer = nbllm.ask("via alias", provider="fast")
    assert answer.text == "Echo: via alias" and answer.provider == "gpu"


def test_alias_by_magic(files):
    user_file, _ = files
    with nbllm_shell() as shell:
        _, _, out = run_cell(shell, "%llm_providers --alias quick=ollama:qwen3:8b")
        assert "alias quick → ollama:qwen3:8b" in out and str(user_file) in out
        _, _, out = run_cell(shell, "%llm_providers --alias careful=openai,embedded --on any")
        assert "falling back on any error" in out
        assert nbllm.aliases() == {"careful": "openai,embedded", "quick": "ollama:qwen3:8b"}
        _, _, out = run_cell(shell, "%llm_providers --unalias quick")
        assert "alias quick removed from" in out
    assert nbllm.aliases() == {"careful": "openai,embedded"}
    assert "quick" not in user_file.read_text()


def test_alias_by_cli_is_seen_by_a_later_process(files, capsys):
    code, out, err = cli(capsys, "--alias", "local=ollama,llamacpp,embedded")
    assert code == 0 and err == "" and "alias local → ollama,llamacpp,embedded" in out
    reset_nbllm()
    assert nbllm.aliases() == {"local": "ollama,llamacpp,embedded"}
    code, out, err = cli(capsys, "--unalias", "local")
    assert code == 0
    reset_nbllm()
    assert nbllm.aliases() == {}


def test_aliases_in_the_file_both_forms(files):
    user_file, _ = files
    user_file.write_text('[aliases]\nfast = "openai:gpt-5-nano"\n[aliases.robust]\ntarget = "openai,embedded"\n'
                         'on = "any"\n')
    assert reread() == []
    assert nbllm.aliases() == {"fast": "openai:gpt-5-nano", "robust": "openai,embedded"}
    assert get_registry().aliases["robust"].on == "any" and get_registry().aliases["fast"].on == "transient"


def test_the_working_directorys_alias_wins(files):
    user_file, work_file = files
    user_file.write_text('[aliases]\nfast = "openai"\nmine = "ollama"\n')
    work_file.write_text('[aliases]\nfast = "embedded"\n')
    assert reread() == []
    assert nbllm.aliases() == {"fast": "embedded", "mine": "ollama"}
    nbllm.alias("fast", "llamacpp")  # saved where it is read from
    assert 'fast = "llamacpp"' in work_file.read_text() and 'fast = "openai"' in user_file.read_text()
    assert sorted(nbllm.unalias("fast")) == sorted([str(user_file), str(work_file)])
    reset_nbllm()
    assert nbllm.aliases() == {"mine": "ollama"}


def test_set_for_this_process_only(files):
    user_file, _ = files
    nbllm.alias("fast", "openai", save=False)
    assert nbllm.aliases() == {"fast": "openai"} and not user_file.exists()
    reread()
    assert nbllm.aliases() == {"fast": "openai"} and not user_file.exists()  # re-reading the files keeps it
    user_file.write_text('[aliases]\nslow = "ollama"\n')
    reread()
    nbllm.unalias("slow", save=False)  # a removal for this process only lasts through reinit too
    reread()
    assert nbllm.aliases() == {"fast": "openai"} and 'slow = "ollama"' in user_file.read_text()
    nbllm.alias("fast", "embedded")  # saved now: the file's value is the one kept
    reread()
    assert nbllm.aliases() == {"fast": "embedded"}
    reset_nbllm()  # a new process
    assert nbllm.aliases() == {"fast": "embedded", "slow": "ollama"}


def test_comments_survive_alias_changes(files, capsys):
    user_file, _ = files
    user_file.write_text('# shortcuts I use\n[aliases]\nfast = "openai"  # the quick one\n# the slow one\n'
                         'slow = "ollama"\n')
    reread()
    assert cli(capsys, "--alias", "third=embedded")[0] == 0
    assert cli(capsys, "--unalias", "slow")[0] == 0
    text = user_file.read_text()
    assert "# shortcuts I use" in text and "# the quick one" in text and 'third = "embedded"' in text
    assert "slow" not in text


def test_aliases_split_around_a_providers_table_can_be_removed_and_added(files, capsys):
    """`[aliases.robust]` after a `[providers.X]` table (appending by hand gives it) splits [aliases] in two."""
    user_file, _ = files
    user_file.write_text(
        '[aliases]\nfast = "openai"\n\n'
        '[providers.gpu]\nbase_url = "http://gpu:8000/v1"\n\n'
        "# the robust one\n"
        '[aliases.robust]\ntarget = "openai,embedded"\non = "any"\n\n'
        "# the other box\n"
        '[providers.lab]\nbase_url = "http://lab:8000/v1"\n'
    )
    assert reread() == []
    code, out, err = cli(capsys, "--unalias", "robust")
    assert code == 0 and err == "" and "alias robust removed from" in out, err
    assert user_file.read_text() == (
        '[aliases]\nfast = "openai"\n\n'
        '[providers.gpu]\nbase_url = "http://gpu:8000/v1"\n\n'
        "# the other box\n"
        '[providers.lab]\nbase_url = "http://lab:8000/v1"\n'
    )
    assert cli(capsys, "--alias", "slow=ollama")[0] == 0
    assert cli(capsys, "--alias", "sure=openai,embedded", "--on", "any")[0] == 0
    assert nbllm.unalias("fast") == [str(user_file)]
    assert user_file.read_text() == (
        '[aliases]\nslow = "ollama"\n\n'
        '[aliases.sure]\ntarget = "openai,embedded"\non = "any"\n\n'
        '[providers.gpu]\nbase_url = "http://gpu:8000/v1"\n\n'
        "# the other box\n"
        '[providers.lab]\nbase_url = "http://lab:8000/v1"\n'
    )
    reset_nbllm()
    assert nbllm.aliases() == {"slow": "ollama", "sure": "openai,embedded"}


def test_unalias_of_the_saved_default_clears_it(files, capsys):
    config = files[0].parent / "config.json"
    nbllm.add_provider("gpu", base_url="http://127.0.0.1:9/v1")
    assert cli(capsys, "--alias", "fast=gpu")[0] == 0
    code, _, err = cli(capsys, "--use", "fast")
    assert code == 0, err
    assert json.loads(config.read_text())["default"]["provider"] == "fast"
    reset_nbllm()
    code, out, err = cli(capsys, "--unalias", "fast")
    assert code == 0 and err == "", err
    assert "default" not in json.loads(config.read_text())
    reset_nbllm()
    assert reread() == [] and nbllm.current().provider == "auto"


# ---- validation ----------------------------------------------------------------------

@pytest.mark.parametrize("name, target, words", [
    ("Fast", "openai", "lower-case"),
    ("my-alias", "openai", "lower-case"),
    ("openai", "ollama", "is a provider's name"),
    ("auto", "ollama", "is a provider's name"),
    ("fast", "nope", "'nope': it is not a provider or an alias. Valid names: openai"),
    ("fast", "openai,nope:m", "'nope'"),
    ("fast", "", "empty"),
    ("fast", "openai:", "names no model"),
    ("fast", "fast", "loop"),
])
def test_bad_aliases_are_one_clear_error(files, name, target, words):
    with pytest.raises(ConfigurationError) as caught:
        nbllm.alias(name, target)
    message = str(caught.value)
    assert words in message and "\n" not in message
    assert nbllm.aliases() == {}


def test_a_loop_through_two_aliases_is_refused(files):
    nbllm.alias("a", "openai")
    nbllm.alias("b", "a,embedded")
    with pytest.raises(ConfigurationError, match="a → b → a"):
        nbllm.alias("a", "b")
    assert nbllm.aliases()["a"] == "openai"


def test_on_must_be_transient_or_any(files):
    with pytest.raises(ConfigurationError, match="transient.*any"):
        nbllm.alias("fast", "openai", on="sometimes")


def test_an_alias_may_name_auto_and_other_aliases(files):
    nbllm.alias("base", "auto")
    nbllm.alias("top", "base,embedded")
    assert nbllm.aliases() == {"base": "auto", "top": "base,embedded"}


def test_an_endpoint_may_not_take_an_aliass_name(files):
    nbllm.alias("gpu", "openai")
    with pytest.raises(ConfigurationError, match=r"is an alias: remove it first with nbllm\.unalias\('gpu'\)"):
        nbllm.add_provider("gpu", base_url="http://127.0.0.1:9/v1")


def test_unalias_of_an_unknown_name_lists_the_aliases(files):
    nbllm.alias("fast", "openai")
    with pytest.raises(ConfigurationError, match="Aliases: fast"):
        nbllm.unalias("slow")


def test_face_mistakes(files, capsys):
    for argv, words in [
        (("--alias", "fast"), "NAME=TARGET"),
        (("--alias", "fast=nope"), "not a provider or an alias"),
        (("--on", "any"), "--on goes with --alias"),
        (("--alias", "fast=openai", "--on", "often"), "transient"),
        (("--unalias", "nothing"), "No alias named 'nothing'"),
    ]:
        code, _, err = cli(capsys, *argv)
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert nbllm.aliases() == {}


# ---- bad entries in the file ------------------------------------------------------------

@pytest.mark.parametrize("body, words", [
    ('openai = "ollama"', "is a provider's name"),
    ('Fast = "ollama"', "lower-case"),
    ('fast = 3', "the target must be a string"),
    ('fast = "openai,"', "empty provider name"),
    ('[aliases.fast]\non = "any"', "the target must be a string"),
    ('[aliases.fast]\ntarget = "openai"\non = "maybe"', "on must be one of transient, any"),
])
def test_each_bad_alias_entry_is_one_warning(files, body, words):
    user_file, _ = files
    header = "" if body.startswith("[aliases.") else "[aliases]\n"
    user_file.write_text(f'{header}{body}\n' + ('[aliases]\n' if header == "" else "") + 'fine = "ollama"\n')
    said = reread()
    assert len(said) == 1, said
    assert str(user_file) in said[0] and "[aliases]" in said[0] and words in said[0] and "ignored" in said[0]
    assert nbllm.aliases() == {"fine": "ollama"}


def test_an_alias_named_like_an_endpoint_in_the_file_is_one_warning(files):
    user_file, _ = files
    user_file.write_text('[providers.gpu]\nbase_url = "http://gpu:1/v1"\n[aliases]\ngpu = "openai"\n')
    said = reread()
    assert len(said) == 1 and "gpu" in said[0] and "provider's name" in said[0]
    assert "gpu" in nbllm.providers() and nbllm.aliases() == {}


def test_a_loop_in_the_file_is_one_warning(files):
    user_file, _ = files
    user_file.write_text('[aliases]\na = "b"\nb = "a,embedded"\nok = "openai"\n')
    said = reread()
    assert len(said) == 1 and "loop" in said[0] and str(user_file) in said[0]
    assert nbllm.aliases() == {"ok": "openai"}


# ---- status and --list -------------------------------------------------------------------

def test_status_lists_aliases_and_says_which_point_at_nothing_usable(files, capsys):
    nbllm.alias("cloudy", "openai")  # no key: not usable
    nbllm.alias("fine", "openai,embedded")
    nbllm.add_provider("gpu", base_url="http://127.0.0.1:9/v1")
    nbllm.alias("box", "gpu")
    nbllm.disable("gpu")
    code, out, _ = cli(capsys, "--status")
    assert code == 0
    after = out[out.index("\naliases:\n") + len("\naliases:\n"):].splitlines()
    assert after[0].split() == ["alias", "target", "on", "note"]
    lines = {line.split()[0]: line for line in after[1:] if line.strip()}
    assert set(lines) == {"box", "cloudy", "fine"}
    assert "points at nothing usable (gpu: disabled)" in lines["box"]
    assert "points at nothing usable (openai: no API key" in lines["cloudy"]
    assert "nothing usable" not in lines["fine"]
    code, out, _ = cli(capsys, "--status", "--json")
    data = json.loads(out)["aliases"]
    assert data["fine"]["target"] == "openai,embedded" and data["fine"]["note"] == ""
    assert data["box"]["note"] == "alias 'box' points at nothing usable (gpu: disabled)."
    assert "OPENAI_API_KEY" in data["cloudy"]["note"]


def test_status_without_aliases_shows_no_alias_table(files, capsys):
    code, out, _ = cli(capsys, "--status")
    assert code == 0 and "aliases:" not in out


def test_list_shows_aliases(files, capsys):
    nbllm.alias("fast", "ollama:qwen3:8b")
    code, out, _ = cli(capsys, "--list")
    assert code == 0 and "aliases:" in out and "ollama:qwen3:8b" in out
    assert out.splitlines()[out.splitlines().index("aliases:") + 1].split()[-1] == "file"
    assert json.loads(cli(capsys, "--list", "--json")[1])["aliases"]["fast"]["target"] == "ollama:qwen3:8b"


def test_magic_status_displays_the_aliases_table(files):
    nbllm.alias("fast", "embedded")
    with nbllm_shell() as shell:
        _, outputs, _ = run_cell(shell, "%llm_providers --status --timeout 0.3")
    alias_tables = [o for o in outputs if "aliases:" in o["data"].get("text/plain", "")]
    assert len(alias_tables) == 1 and "fast" in alias_tables[0]["data"]["text/html"]


def test_an_alias_to_a_removed_endpoint_says_so(files, capsys):
    nbllm.add_provider("gpu", base_url="http://127.0.0.1:9/v1")
    code, out, _ = cli(capsys, "--alias", "box=gpu")
    assert code == 0 and "note" not in out
    nbllm.remove_provider("gpu")
    note = alias_problem("box")
    assert "'gpu'" in note and "alias 'box'" in note and "\n" not in note


# ---- unalias and the default ---------------------------------------------------------

def test_unalias_of_an_alias_other_aliases_name_is_refused(files, capsys):
    nbllm.alias("fast", "embedded")
    nbllm.alias("best", "fast")
    nbllm.alias("safe", "openai,fast")
    with pytest.raises(ConfigurationError) as raised:
        nbllm.unalias("fast")
    message = str(raised.value)
    assert "best" in message and "safe" in message and "\n" not in message
    assert nbllm.aliases()["fast"] == "embedded"
    code, _, err = cli(capsys, "--unalias", "fast")
    assert code == 2 and "best" in err and len(err.strip().splitlines()) == 1
    nbllm.unalias("best")
    nbllm.unalias("safe")
    nbllm.unalias("fast")
    assert nbllm.aliases() == {}


def test_unalias_of_the_default_falls_back_to_auto_with_one_warning(files):
    import warnings

    from nbllm.config import NbllmConfigWarning

    nbllm.alias("fast", "embedded")
    nbllm.use("fast")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nbllm.unalias("fast")
    said = [str(w.message) for w in caught if issubclass(w.category, NbllmConfigWarning)]
    assert nbllm.current().provider == "auto" and len(said) == 1 and "'fast'" in said[0], said


def test_unalias_says_when_the_saved_default_was_cleared(files, capsys):
    nbllm.alias("fast", "embedded")
    nbllm.alias("slow", "embedded")
    nbllm.use("fast", save=True)
    code, out, _ = cli(capsys, "--unalias", "slow")
    assert code == 0 and "saved default" not in out
    code, out, _ = cli(capsys, "--unalias", "fast")
    assert code == 0 and "fast was the saved default: cleared (choose another with --use NAME)" in out, out


def test_a_process_alias_that_the_files_turn_into_a_loop_is_dropped_with_one_warning(files):
    user_file, _ = files
    nbllm.alias("a", "embedded")
    nbllm.alias("b", "a", save=False)
    user_file.write_text('[aliases]\na = "b"\n')
    said = reread()
    assert len(said) == 1 and "'b'" in said[0] and "loop" in said[0], said
    assert nbllm.aliases() == {"a": "b"}
