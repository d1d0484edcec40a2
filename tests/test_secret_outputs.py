"""No secret in any output or file, when a server echoes the credentials it was sent (issue 9).

The default provider `lmstudio` has a key and, in one scenario, a base URL with
`user:password@` (the transport then sends `Authorization: Basic …`); its server answers
every chat request with a 401 whose message echoes that header and the credential as
`x-api-key: …`. `ollama` answers from a good server behind the same credentials. Then
every place a user or a shared notebook can see is searched for the key, the password and
the Basic token: errors and their whole exception chain, settings reprs, compare/consensus
tables, `map` results, `history()`, the raw bytes of every file the test wrote (call log,
replay cache, their WAL files), the `%%llm` cell outputs, logs, and a saved notebook — from
an InteractiveShell and from a real kernel.
"""

from __future__ import annotations

import base64
import logging
import os
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import _PROVIDER_PREFIXES, execute_in_kernel, nbllm_shell, reset_nbllm
from fakeserver import FakeLLMServer
from nbformat.v4 import new_code_cell, new_notebook, new_output

import nbllm
from nbllm.batch import failures
from nbllm.errors import ModelError
from nbllm.registry import get_registry

KEY = "sk-test-abcdefgh12345678"
USER, PASSWORD = "user", "pa55word"
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()  # dXNlcjpwYTU1d29yZA==
FORBIDDEN = (KEY, KEY[8:-4], PASSWORD, f"{USER}:{PASSWORD}", BASIC.rstrip("="))


def with_password(url: str) -> str:
    return url.replace("http://", f"http://{USER}:{PASSWORD}@", 1)


def assert_clean(*texts: Any) -> None:
    for text in texts:
        text = text if isinstance(text, str) else repr(text)
        for secret in FORBIDDEN:
            assert secret not in text, f"{secret!r} leaked into: {text[:400]}"


def assert_clean_bytes(path: Path) -> None:
    data = path.read_bytes()
    for secret in FORBIDDEN:
        for encoded in {secret.encode("utf-8"), secret.encode("utf-16-le")}:
            assert encoded not in data, f"{secret!r} is in the bytes of {path}"


def exception_texts(error: BaseException) -> list[str]:
    """str/repr/args of `error` and of every exception in its __context__/__cause__ chain, and
    the traceback Python would print for it."""
    texts: list[str] = ["".join(traceback.format_exception(error))]
    seen: list[BaseException] = []
    todo: list[BaseException] = [error]
    while todo:
        current = todo.pop()
        if any(current is s for s in seen):
            continue
        seen.append(current)
        texts += [str(current), repr(current), repr(current.args), repr(vars(current))]
        todo += [e for e in (current.__context__, current.__cause__) if e is not None]
    return texts


@pytest.fixture(params=["url-password", "bearer-key"])
def leaky(request, make_server, fake_server, monkeypatch) -> FakeLLMServer:
    """`lmstudio` (the default) behind a server that echoes credentials in a 401."""
    server = make_server(mode="echo_auth")
    url, good = server.url + "/v1", fake_server.url
    if request.param == "url-password":
        url, good = with_password(url), with_password(good)
    for key, value in {
        "LMSTUDIO_BASE_URL": url, "LMSTUDIO_API_KEY": KEY, "LMSTUDIO_MODEL": "fake-model",
        "LMSTUDIO_MAX_RETRIES": "0", "LMSTUDIO_TIMEOUT": "3", "NBLLM_PROVIDER": "lmstudio",
        "OLLAMA_BASE_URL": good, "OLLAMA_MODEL": "fake-model", "OLLAMA_MAX_RETRIES": "0",
        "NBLLM_HEALTH_TIMEOUT": "0.5",
    }.items():
        monkeypatch.setenv(key, value)
    reset_nbllm()
    server.scenario = request.param  # type: ignore[attr-defined]
    return server


def sent_credential(server: FakeLLMServer) -> str:
    headers = {k.lower(): v for k, v in server.chat_requests()[-1]["headers"].items()}
    return headers.get("authorization", "")


def test_the_echo_really_carries_the_secret(leaky):
    """The fault is real: the server was sent the credential, and its 401 echoed it."""
    with pytest.raises(ModelError) as info:
        nbllm.ask("hi")
    expected = f"Basic {BASIC}" if leaky.scenario == "url-password" else f"Bearer {KEY}"
    assert sent_credential(leaky) == expected
    line = str(info.value)
    assert "HTTP 401" in line and "refused the credentials" in line and "check LMSTUDIO_API_KEY" in line
    assert "rejected Authorization: " in line and "x-api-key: " in line  # the echo is shown, masked
    assert_clean(line)


def test_the_masked_echo_keeps_the_sentence_readable(leaky):
    """Masking a credential must not swallow the punctuation after it (the `)` closing the echo)."""
    with pytest.raises(ModelError) as info:
        nbllm.ask("hi")
    line = str(info.value)
    assert line.count("(") == line.count(")"), line


def test_no_secret_in_errors_tables_history_files_or_logs(leaky, tmp_path, caplog):
    seen: list[Any] = []
    with caplog.at_level(logging.DEBUG), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ModelError) as asked:
            nbllm.ask("hi")
        seen += exception_texts(asked.value)

        stream = nbllm.stream("hi there")
        with pytest.raises(ModelError) as streamed:
            list(stream)
        seen += exception_texts(streamed.value)
        seen += [repr(stream.answer), stream.answer.metadata(), stream.answer.error]

        quiet = nbllm.stream("hi there", raise_errors=False)
        assert list(quiet) == [] and quiet.answer.failure is not None
        seen += exception_texts(quiet.answer.failure)

        table = nbllm.compare("hi", providers=["lmstudio", "ollama"])
        rows = table.set_index("provider")
        assert "HTTP 401" in rows.loc["lmstudio", "error"] and rows.loc["ollama", "answer"] == "Echo: hi"
        from nbllm import tables

        seen += [table.to_string(), table.to_html(), table.to_dict("records"), tables.display_bundle(table)]

        vote = nbllm.consensus("hi", providers=["lmstudio", "ollama"])
        assert vote.decision == "Echo: hi" and "HTTP 401" in vote.failed["lmstudio"]
        seen += [repr(vote), str(vote), vote._repr_markdown_(), vote._repr_html_(), vote.to_frame().to_string(),
                 vote.failed, vote.rows]

        mapped = nbllm.map(["a", "b"], "say {value}", progress=False)
        assert all(isinstance(v, nbllm.Failed) for v in mapped)
        seen += [repr(mapped), mapped.to_string(), failures(mapped).to_string(), mapped.attrs]

        # Key and URL password inside a prompt (and so in the echoed answer) of a recorded call.
        prompt = f"my key is {KEY}, my proxy {with_password('http://127.0.0.1:1')}/x"
        answer = nbllm.ask(prompt, provider="ollama", cache="record")
        assert answer.text == f"Echo: {prompt}"
        assert nbllm.ask(prompt, provider="ollama", cache="record").cached  # it is in the replay cache

        registry = get_registry()
        seen += [repr(registry.settings(n)) for n in registry.names()]
        seen += [str(registry.settings("lmstudio")), repr(registry.global_settings), registry.variables("lmstudio"),
                 registry.variables("ollama"), repr(nbllm.current()), repr(nbllm.history), repr(nbllm.cache)]

        history = nbllm.history(None)
        assert len(history) >= 8 and (history["outcome"] == "error").any()
        seen += [history.to_string(), history.to_json(), history.to_dict("records")]
        nbllm.history.flush()
    ours = [r for r in caplog.records if r.name == "nbllm" or r.name.startswith("nbllm.")]
    seen += [r.getMessage() for r in ours] + [str(w.message) for w in caught]
    assert_clean(*seen)

    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name.startswith("history.sqlite") for p in written)
    assert any(p.name.startswith("cache.sqlite") for p in written)
    for path in written:  # call log, replay cache, their -wal/-shm files, the config file
        assert_clean_bytes(path)


def test_no_secret_in_the_transports_log_lines(leaky, caplog):
    """A user who turns logging on (`logging.basicConfig(level="INFO")` in a notebook) sees the
    HTTP client's own lines (httpx2 logs every request's URL at INFO): they must not carry the
    URL password either."""
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ModelError):
            nbllm.ask("hi")
        assert nbllm.ask("hi", provider="ollama").text == "Echo: hi"
    assert any(r.name.startswith("httpx") for r in caplog.records)  # the transport did log
    assert_clean(*(r.getMessage() for r in caplog.records), caplog.text)


# ---- %%llm in an InteractiveShell, and the notebook saved from it ------------------------------


@pytest.fixture
def shell(leaky) -> Iterator[Any]:
    with nbllm_shell() as ip:
        yield ip


def run_to_cell(ip: Any, source: str) -> Any:
    """Run `source` and return it as a notebook cell with the outputs a front end would save."""
    from IPython.utils.capture import capture_output

    with capture_output() as captured:
        publisher = ip.display_pub
        result = ip.run_cell(source)
    cell = new_code_cell(source)
    for shown in publisher.outputs:
        cell.outputs.append(new_output("display_data", data=shown["data"], metadata=shown["metadata"]))
    for name, text in (("stdout", captured.stdout), ("stderr", captured.stderr)):
        if text:
            cell.outputs.append(new_output("stream", name=name, text=text))
    error = result.error_in_exec or result.error_before_exec
    if error is not None:
        lines = error._render_traceback_() if hasattr(error, "_render_traceback_") else [str(error)]
        cell.outputs.append(new_output("error", ename=type(error).__name__, evalue=str(error), traceback=lines))
        cell.metadata["raw_error"] = exception_texts(error)  # what the kernel keeps (sys.last_value)
    return cell


def test_no_secret_in_llm_cells_or_the_saved_notebook(shell, leaky, tmp_path):
    cells = [run_to_cell(shell, source) for source in (
        "%%llm -o out\nhi", "%%llm --no-stream\nhi", "x = %llm hi",
        "%%llm --compare lmstudio,ollama -o table\nhi", "%%llm --consensus lmstudio,ollama\nhi",
        "nbllm_settings = __import__('nbllm').get_registry().settings('lmstudio')\nnbllm_settings",
        "__import__('nbllm').history(None)",
    )]
    failed = [c for c in cells[:3] if any(o.output_type == "error" for o in c.outputs)]
    assert len(failed) == 3
    for cell in failed:
        text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        (line,) = [line for line in text.splitlines() if line.strip()]
        assert line.startswith("nbllm: lmstudio at ") and "HTTP 401" in line
    assert "HTTP 401" in str(shell.user_ns["table"].set_index("provider").loc["lmstudio", "error"])
    assert_clean(cells, shell.user_ns.get("table"), repr(shell.user_ns.get("nbllm_settings")))
    notebook = new_notebook(cells=cells)
    nbformat.validate(notebook)
    path = tmp_path / "saved.ipynb"
    nbformat.write(notebook, str(path))
    assert "HTTP 401" in path.read_text()
    for written in tmp_path.rglob("*"):
        if written.is_file():
            assert_clean_bytes(written)


# ---- the same in a real kernel ----------------------------------------------------------------


@pytest.mark.kernel
def test_no_secret_in_a_notebook_run_by_a_real_kernel(tmp_path):

    with FakeLLMServer(mode="echo_auth") as bad, FakeLLMServer() as good:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_PROVIDER_PREFIXES)}
        closed = "http://127.0.0.1:9"
        env.update(
            LMSTUDIO_BASE_URL=with_password(bad.url) + "/v1", LMSTUDIO_API_KEY=KEY, LMSTUDIO_MODEL="fake-model",
            LMSTUDIO_MAX_RETRIES="0", LMSTUDIO_TIMEOUT="3", NBLLM_PROVIDER="lmstudio",
            OLLAMA_BASE_URL=with_password(good.url), OLLAMA_MODEL="fake-model", LLAMACPP_BASE_URL=closed,
            EMBEDDED_BASE_URL=closed, NBLLM_CONFIG=str(tmp_path / "config.json"),
            NBLLM_HISTORY=str(tmp_path / "h.sqlite"), NBLLM_CACHE=str(tmp_path / "c.sqlite"),
        )
        sources = [
            "%load_ext nbllm\nimport nbllm",
            "%%llm -o out\nhi", "%%llm --no-stream\nhi", "x = %llm hi",
            "nbllm.compare('hi', providers=['lmstudio', 'ollama'])",
            "nbllm.consensus('hi', providers=['lmstudio', 'ollama'])",
            "nbllm.get_registry().settings('lmstudio')",
            "try:\n    nbllm.ask('hi')\nexcept Exception as e:\n    err = e\n"
            "print(repr(err)); print(repr(err.__context__), repr(err.__cause__))",
            "nbllm.ask('hi')",
            "import os\nprompt = 'key ' + os.environ['LMSTUDIO_API_KEY'] + ' in a prompt'\n"
            "nbllm.ask(prompt, provider='ollama', cache='record').text == 'Echo: ' + prompt",  # no key in the source
            "nbllm.history(None)",
        ]
        notebook = new_notebook(cells=[new_code_cell(s) for s in sources])
        execute_in_kernel(notebook, env, tmp_path, allow_errors=True)
    assert bad.chat_requests() and {k.lower(): v for k, v in bad.chat_requests()[-1]["headers"].items()}[
        "authorization"] == f"Basic {BASIC}"
    errors = [o for c in notebook.cells for o in c.outputs if o.output_type == "error"]
    assert len(errors) == 4  # the three magics and the bare ask
    for error in errors[:3]:
        assert len(error.traceback) == 1 and error.traceback[0].startswith("nbllm: lmstudio at ")
    assert "True" in str(notebook.cells[9].outputs)
    path = tmp_path / "saved.ipynb"
    nbformat.write(notebook, str(path))
    assert "HTTP 401" in path.read_text()
    assert_clean(nbformat.writes(notebook))
    for written in tmp_path.rglob("*"):
        if written.is_file():
            assert_clean_bytes(written)


def test_the_sdks_module_loggers_are_scrubbed_too(local_provider, caplog):
    """A logger's filter never sees its children's records: `openai._base_client`, `groq._base_client`
    must carry the filter themselves (a library that logs a header would otherwise leak it)."""
    import groq._base_client  # noqa: F401  (the SDKs' module loggers exist once they are imported)
    import openai._base_client  # noqa: F401  (a local ask goes by the wire path: nothing else imports it)

    nbllm.ask("hi")  # building a client puts the filters on
    with caplog.at_level(logging.DEBUG):
        for name in ("openai._base_client", "groq._base_client"):
            logging.getLogger(name).debug("sending Authorization: Bearer sk-leak-0123456789abcdefghij")
    messages = [r.getMessage() for r in caplog.records if r.name.endswith("_base_client")]
    assert len(messages) == 2 and all("sk-leak" not in m for m in messages), messages
