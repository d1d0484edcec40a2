"""The `nbllm providers` command line: tables, JSON, exit codes, what it saves."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import nbllm
from nbllm import catalog
from nbllm.cli import build_providers_parser, main
from nbllm.config import user_config_path
from nbllm.registry import reset_registry


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    monkeypatch.setenv("NBLLM_HEALTH_TIMEOUT", "0.5")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["providers", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys, *argv: str) -> tuple[int, dict]:
    code, out, _ = run(capsys, *argv, "--json")
    return code, json.loads(out)


def new_process() -> None:
    """A later `nbllm` invocation: nothing of this one survives but the config file."""
    reset_registry()
    from nbllm import session

    session.reset_default()


def test_status_is_the_default(capsys, fake_server, monkeypatch):
    monkeypatch.setenv("OLLAMA_BASE_URL", fake_server.url)
    code, out, err = run(capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == "default: auto" and lines[1].endswith("1 available")
    assert "ollama" in out and "available" in out and "connection refused" in out
    code, explicit, _ = run(capsys, "--status")
    assert code == 0 and explicit.splitlines()[:2] == lines[:2]


def test_status_json(capsys, fake_server, monkeypatch):
    monkeypatch.setenv("LMSTUDIO_BASE_URL", fake_server.url + "/v1")
    code, data = run_json(capsys, "--status")
    assert code == 0 and data["ok"] is True
    assert list(data["providers"])[:7] == ["openai", "anthropic", "gemini", "grok", "lmstudio", "ollama", "llamacpp"]
    assert data["providers"]["lmstudio"]["status"] == "available"
    assert data["providers"]["lmstudio"]["model_id"] == "fake-model"
    assert data["summary"]["available"] == 1 and data["default"] == {"provider": "auto", "model": None}


def test_health_check_succeeds_when_something_answers(capsys, fake_server, monkeypatch):
    monkeypatch.setenv("LLAMACPP_BASE_URL", fake_server.url)
    code, out, err = run(capsys, "--health-check")
    assert code == 0 and err == ""
    assert "models" in out.splitlines()[1] and "fake-model" in out


def test_health_check_fails_when_nothing_is_available(capsys):
    code, out, err = run(capsys, "--health-check")
    assert code == 1 and "llamacpp" in out
    assert err == f"nbllm: no provider is available. {catalog.NOTHING_USABLE_ADVICE}\n"


def test_faces_write_no_provider_advice_of_their_own():
    """Advice comes from the catalog (`how_to_enable`, `install_hint`, NOTHING_USABLE_ADVICE)."""
    import inspect

    from nbllm import cli, commands
    from nbllm.magics import providers

    for face in (cli, commands, providers):
        source = inspect.getsource(face)
        for advice in ("LM Studio", "OPENAI_API_KEY", "enable with", "pip install"):
            assert advice not in source, (face.__name__, advice)


def test_health_check_timeout_option_with_a_hanging_server(capsys, make_server, monkeypatch):
    hang = make_server(mode="hang")
    monkeypatch.setenv("OLLAMA_BASE_URL", hang.url)
    code, data = run_json(capsys, "--health-check", "--timeout", "0.2")
    assert code == 1 and data["ok"] is False and "no provider" in data["error"]
    assert "timed out after 0.2 s" in data["providers"]["ollama"]["error"]


def test_list_shows_variables_masked(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k-anthropic-value")
    (tmp_path / ".env").write_text("OLLAMA_MODEL=phi4\n")
    code, out, err = run(capsys, "--list")
    assert code == 0 and err == ""
    assert f"user config file: {user_config_path()}" in out
    line = next(row for row in out.splitlines() if "ANTHROPIC_API_KEY" in row)
    assert "********" in line and "env" in line and "k-anthropic-value" not in out
    assert "phi4" in next(row for row in out.splitlines() if "OLLAMA_MODEL" in row)


def test_list_reports_bad_values(capsys, monkeypatch):
    monkeypatch.setenv("GROK_TEMPERATURE", "9")
    code, data = run_json(capsys, "--list")
    assert code == 0 and any("GROK_TEMPERATURE='9'" in p for p in data["problems"])


def test_bad_values_are_one_line_on_stderr_not_a_python_warning(capsys, monkeypatch):
    monkeypatch.setenv("OLLAMA_WEIGHT", "much")
    code, out, err = run(capsys, "--list")
    assert code == 0
    assert "NbllmConfigWarning" not in err and "warnings.warn" not in err


def test_enable_disable_always_persist(capsys):
    code, out, err = run(capsys, "--disable", "Ollama")
    assert code == 0 and out.startswith("ollama disabled (saved to ") and err == ""
    assert json.loads(user_config_path().read_text())["disabled"] == ["ollama"]
    new_process()
    assert not nbllm.get_registry().settings("ollama").enabled
    code, data = run_json(capsys, "--status")
    assert data["providers"]["ollama"]["status"] == "disabled"
    assert run(capsys, "--enable", "ollama")[0] == 0
    new_process()
    assert nbllm.get_registry().settings("ollama").enabled


def test_enable_notes_when_the_environment_wins(capsys, monkeypatch):
    monkeypatch.setenv("GEMINI_ENABLED", "false")
    code, out, _ = run(capsys, "--enable", "gemini")
    assert code == 0 and "GEMINI_ENABLED=false in the environment wins" in out


def test_use_persists_the_default(capsys):
    code, out, _ = run(capsys, "--use", "ollama", "--model", "qwen3")
    assert code == 0 and out.startswith("default: ollama (qwen3) (saved to ")
    new_process()
    assert (nbllm.current().provider, nbllm.current().model) == ("ollama", "qwen3")
    code, data = run_json(capsys, "--use", "auto")
    assert code == 0 and data == {"ok": True, "provider": "auto", "model": None, "saved": True}


@pytest.mark.parametrize("argv, words", [
    (["--enable", "nope"], "Invalid LLM provider 'nope'"),
    (["--disable", "nope"], "Invalid LLM provider 'nope'"),
    (["--use", "nope"], "Invalid LLM provider 'nope'"),
    (["--test", "nope"], "Invalid LLM provider 'nope'"),
    (["--test", "auto"], "--test takes a provider NAME, not auto"),
    (["--model", "m"], "--model goes with --use NAME"),
    (["--list", "--model", "m"], "--model goes with --use NAME"),
    (["--list", "--timeout", "1"], "--timeout goes with --status, --health-check or --test"),
    (["--use", "ollama", "--timeout", "1"], "--timeout goes with"),
    (["--status", "--save"], "--save goes with --enable, --disable or --use"),
])
def test_usage_mistakes_exit_2_with_one_line(capsys, argv, words):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("nbllm: ") and words in err
    code, data = run_json(capsys, *argv)
    assert code == 2 and data["ok"] is False and words in data["error"]


def test_a_usage_mistake_changes_nothing(capsys):
    assert run(capsys, "--use", "ollama", "--timeout", "1")[0] == 2
    assert run(capsys, "--disable", "ollama", "--timeout", "1")[0] == 2
    assert not user_config_path().exists()
    assert nbllm.current().provider == "auto" and nbllm.get_registry().settings("ollama").enabled


def test_the_options_that_probe_take_a_timeout(capsys):
    assert run(capsys, "--timeout", "0.3")[0] == 0  # --status is implied
    assert run(capsys, "--status", "--timeout", "0.3")[0] == 0
    assert run(capsys, "--test", "ollama", "--timeout", "0.3")[0] == 1  # ran; nothing answers there


def test_use_or_test_a_disabled_provider_is_a_usage_mistake(capsys):
    run(capsys, "--disable", "grok")
    for option in ("--use", "--test"):
        code, out, err = run(capsys, option, "grok")
        assert code == 2 and out == "" and err.count("\n") == 1
        assert "disabled" in err and "--enable grok" in err


def test_unknown_option_is_a_usage_error(capsys):
    assert main(["providers", "--bogus"]) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --bogus" in err
    assert err.startswith("usage: nbllm providers") and "nbllm providers: error:" in err  # not `nbllm`'s usage
    assert main(["providers", "--status", "--list"]) == 2  # one action at a time
    assert "not allowed with argument" in capsys.readouterr().err
    assert main([]) == 2


def test_help_and_version(capsys):
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("nbllm ")
    assert main(["providers", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--status", "--list", "--enable", "--disable", "--test", "--health-check", "--reinit", "--use",
                   "--model", "--save", "--json"):
        assert option in out
    epilog = " ".join(out[out.index("Exit status:"):].split())
    assert "0 done; 1 the command ran but failed" in epilog and "2 a usage mistake" in epilog
    for status in ("0: done", "1: the command ran but failed", "2: a usage", "130: interrupted"):
        assert status in " ".join(main.__doc__.split())  # main documents them too


def test_test_local_success(capsys, fake_server, monkeypatch):
    monkeypatch.setenv("LMSTUDIO_BASE_URL", fake_server.url + "/v1")
    code, out, err = run(capsys, "--test", "lmstudio")
    assert code == 0 and err == ""
    assert out.startswith(f"lmstudio: answering at {fake_server.url}/v1 in ") and "model fake-model" in out
    assert [r["path"] for r in fake_server.requests] == ["/api/v0/models"], "one probe, not one per layer"


def test_test_local_failure(capsys, make_server, monkeypatch):
    monkeypatch.setenv("NBLLM_HEALTH_TIMEOUT", "0.2")
    hang = make_server(mode="hang")
    monkeypatch.setenv("LLAMACPP_BASE_URL", hang.url)
    code, out, err = run(capsys, "--test", "llamacpp")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and f"llamacpp at {hang.url}" in err and "timed out" in err
    code, data = run_json(capsys, "--test", "llamacpp")
    assert code == 1 and data["ok"] is False and "timed out" in data["error"]


def test_test_cloud(capsys, monkeypatch):
    code, _, err = run(capsys, "--test", "anthropic")
    assert code == 1 and "no API key" in err
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k-a")
    new_process()
    code, out, _ = run(capsys, "--test", "anthropic")
    assert code == 0 and "configured" in out and "no request made" in out


def test_reinit(capsys):
    code, out, _ = run(capsys, "--reinit")
    assert code == 0 and out.startswith("re-read the environment") and "providers:" in out


def test_the_parser_is_the_shared_one():
    from nbllm.magics.providers import ProviderMagics

    cli = {a.dest for a in build_providers_parser()._actions}
    magic = {a.dest for a in ProviderMagics.llm_providers.parser._actions}
    assert cli - magic == {"json", "help"} and magic - cli == {"panel"}
    args = build_providers_parser().parse_args(["--use", "ollama", "-m", "x", "--save"])
    assert (args.use, args.model, args.save, args.status) == ("ollama", "x", True, False)


def test_console_script_runs_in_a_new_process(tmp_path):
    env = {k: v for k, v in os.environ.items()}
    script = os.path.join(os.path.dirname(sys.executable), "nbllm")
    result = subprocess.run([script, "providers", "--use", "ollama", "--json"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["provider"] == "ollama"
    result = subprocess.run([script, "providers", "--status", "--json"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and json.loads(result.stdout)["default"]["provider"] == "ollama"
    result = subprocess.run([script, "providers", "--disable", "nope"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("nbllm: Invalid LLM provider 'nope'")
    result = subprocess.run([script, "providers", "--model", "x"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "nbllm: --model goes with --use NAME or --add NAME, e.g. --use ollama --model llama3.2.\n"


def test_neither_face_imports_the_other():
    code = ("import sys, nbllm.{0}; print(sorted(m for m in ('nbllm.cli', 'nbllm.magics.providers', 'IPython') "
            "if m in sys.modules))")
    cli = subprocess.run([sys.executable, "-c", code.format("cli")], capture_output=True, text=True, check=True)
    assert cli.stdout.strip() == "['nbllm.cli']"
    magic = subprocess.run([sys.executable, "-c", code.format("magics.providers")], capture_output=True, text=True,
                           check=True)
    assert magic.stdout.strip() == "['IPython', 'nbllm.magics.providers']"


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "soon"])
def test_timeout_must_be_a_positive_number(capsys, value):
    assert main(["providers", "--health-check", "--timeout", value]) == 2
    captured = capsys.readouterr()
    assert "argument --timeout" in captured.err and repr(value) in captured.err
    assert captured.out == ""  # no check ran


def test_text_tables_are_left_aligned_and_narrow(capsys, monkeypatch):
    """A long error neither pads every line nor runs off the terminal; --json keeps it whole."""
    long_error = "connection refused (nothing is listening) at http://127.0.0.1:9/v1 " + "x" * 150
    from nbllm.health import ProviderHealth
    from nbllm import api

    def fake_health(timeout=None):
        return {
            "ollama": ProviderHealth(provider="ollama", enabled=True, connected=False, model_id="llama3.2",
                                     base_url="http://localhost:11434", error=long_error),
            "openai": ProviderHealth(provider="openai", enabled=True, connected=None, kind="cloud",
                                     configured=False, model_id="gpt-5-mini", error="no API key: set OPENAI_API_KEY"),
        }

    monkeypatch.setattr(api, "health_check", fake_health)
    for option in ("--status", "--health-check"):
        code, out, _ = run(capsys, option)
        lines = out.splitlines()
        header = next(i for i, line in enumerate(lines) if line.startswith("provider"))
        table = lines[header:]
        assert max(map(len, table)) <= 170, table
        assert all(line == line.rstrip() for line in table)
        ollama = next(line for line in table if line.startswith("ollama"))
        assert "connection refused (nothing is listening)" in ollama and "…" in ollama and "x" * 100 not in ollama
        openai = next(line for line in table if line.startswith("openai"))
        # Text is left-aligned: each cell starts where its heading does.
        column = table[0].index("error")
        assert openai[column:].startswith("no API key: set OPENAI_API_KEY")
    code, data = run_json(capsys, "--health-check")
    assert long_error in json.dumps(data)


def test_disabled_rows_say_how_to_enable_from_any_face(capsys, monkeypatch):
    monkeypatch.setenv("OLLAMA_ENABLED", "false")
    code, data = run_json(capsys, "--health-check")
    ollama = next(row for row in _rows(data) if row["provider"] == "ollama")
    assert ollama["error"].startswith("disabled: enable with nbllm.enable('ollama')")
    assert "nbllm providers --enable ollama" in ollama["error"] and "`" not in ollama["error"]


def _rows(data) -> list[dict]:
    rows = data.get("providers") or data.get("health") or data
    return list(rows.values()) if isinstance(rows, dict) else rows


def test_a_bad_setting_is_one_plain_line_on_stderr(capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_TEMPERATURE", "hot")
    code, out, err = run(capsys, "--list")
    assert code == 0 and "OPENAI_TEMPERATURE" in out
    lines = [line for line in err.splitlines() if line]
    assert lines == ["nbllm: OPENAI_TEMPERATURE='hot' is not valid: expected a number between 0 and 2; "
                     "using the default 0.7."]
