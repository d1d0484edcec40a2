"""Messages: nbllm's warnings print as one plain line (no cell file and line), bad values are said in
nbllm's words with the accepted form and what is used instead, an HTTP failure is one sentence."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import pytest

import nbllm
from nbllm.catalog import get_spec
from nbllm.config import NbllmConfigWarning
from nbllm.errors import ModelError
from nbllm.failures import http_failure, server_message
from nbllm.warning_lines import NbllmWarning, install

KEY = "sk-messages-0123456789abcdef"
CELL_FILE = "/tmp/ipykernel_7919/1229562132.py"  # what a kernel names a cell
PYTHON_WORDS = ("could not convert", "invalid literal", "invalid float", "invalid int", "ValueError", "base 10")


# ---- warnings without file and line -----------------------------------------------------------


def test_nbllm_warnings_format_as_one_plain_line():
    install()
    text = warnings.formatwarning("nbllm: OPENAI_TEMPERATURE='hot' is not valid", NbllmConfigWarning, CELL_FILE, 2)
    assert text == "nbllm: OPENAI_TEMPERATURE='hot' is not valid\n"
    bare = warnings.formatwarning("a placeholder\nover two lines", NbllmWarning, CELL_FILE, 2)
    assert bare == "nbllm: a placeholder over two lines\n"


def test_other_warnings_print_as_before():
    before = warnings.formatwarning("deprecated thing", DeprecationWarning, CELL_FILE, 2, "x = 1")
    install()
    install()  # idempotent: one wrapper
    after = warnings.formatwarning("deprecated thing", DeprecationWarning, CELL_FILE, 2, "x = 1")
    assert after == before and after.startswith(f"{CELL_FILE}:2: DeprecationWarning: deprecated thing")


def test_they_stay_catchable(monkeypatch):
    monkeypatch.setenv("OPENAI_TEMPERATURE", "hot")
    with pytest.warns(NbllmConfigWarning, match="OPENAI_TEMPERATURE='hot'"):
        nbllm.reinit()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nbllm.reinit()
    assert [w.category for w in caught] == [NbllmConfigWarning] and issubclass(NbllmConfigWarning, UserWarning)


def test_in_an_ipython_shell_the_warning_is_one_line_and_other_warnings_are_untouched(monkeypatch, tmp_path):
    """A real InteractiveShell in its own process (pytest records warnings in this one, so none is shown)."""
    monkeypatch.setenv("OPENAI_TEMPERATURE", "hot")
    script = textwrap.dedent("""
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance()
        shell.run_cell("%load_ext nbllm")
        shell.run_cell("import nbllm; nbllm.current()")
        shell.run_cell("import warnings; warnings.warn('from another library')")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "nbllm: OPENAI_TEMPERATURE='hot' is not valid: expected a number between 0 and 2; using the default " \
           "0.7." in lines, done.stderr
    assert not any("NbllmConfigWarning" in line or "ipython-input" in line and "nbllm" in line for line in lines)
    other = next(line for line in lines if "from another library" in line)
    assert "UserWarning: from another library" in other and other.startswith("<ipython-input-")


# ---- bad values in nbllm's words ----------------------------------------------------------------


def test_a_bad_value_is_explained_in_nbllms_words(monkeypatch):
    """Through the whole path (the environment, `reinit`, the warning), word for word; every variable's
    form and replacement: tests/test_settings_sources.py."""
    variable, value = "OPENAI_MAX_TOKENS", "many"
    form, instead = "expected a whole number between 1 and 1,000,000", "using the default 1024"
    monkeypatch.setenv(variable, value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nbllm.reinit()
    (message,) = [str(w.message) for w in caught if issubclass(w.category, NbllmConfigWarning)]
    assert message == f"nbllm: {variable}={value!r} is not valid: {form}; {instead}."
    assert not any(words in message for words in PYTHON_WORDS)


@pytest.mark.parametrize("option, words", [
    ("-t hot", "argument -t/--temperature: expected a number between 0 and 2, got 'hot'"),
    ("--max-tokens 2.5", "argument --max-tokens: expected a whole number between 1 and 1,000,000, got '2.5'"),
    ("--timeout soon", "argument --timeout: expected a number of seconds above 0 and at most 3,600, got 'soon'"),
])
def test_a_magic_option_that_is_not_a_number_is_said_in_nbllms_words(option, words):
    from conftest import nbllm_shell, run_cell

    with nbllm_shell() as shell:
        result, outputs, text = run_cell(shell, f"%%llm {option}\nhi")
    assert not result.success and outputs == []
    assert [line for line in text.splitlines() if line.strip()] == [f"UsageError: {words}"]


def test_a_per_call_value_says_the_accepted_form():
    with pytest.raises(nbllm.ConfigurationError) as info:
        nbllm.ask("hi", provider="lmstudio", temperature="hot")
    assert "temperature='hot' is invalid: it must be a number between 0 and 2" in str(info.value)


# ---- HTTP failures in one sentence --------------------------------------------------------------

BODIES = {
    401: {"error": {"message": f"Incorrect API key provided: {KEY[:8]}****************cdef. You can find your API "
                               "key at https://platform.openai.com/account/api-keys.",
                    "type": "invalid_request_error", "code": "invalid_api_key"}},
    429: {"error": {"message": "Rate limit reached for requests per min (RPM): Limit 3, Used 3. Please try again in "
                               "20s.", "type": "requests", "code": "rate_limit_exceeded"}},
    500: {"error": {"message": "The server had an error while processing your request. Sorry about that!",
                    "type": "server_error"}},
}
HINTS = {401: "check OPENAI_API_KEY", 429: "wait 7 s and try again, or send fewer requests at once",
         500: "try again later"}
SAID = {401: "Incorrect API key provided: ***", 429: "Rate limit reached for requests per min",
        500: "The server had an error while processing your request"}


def _one_sentence(text: str, status: int) -> None:
    assert "\n" not in text and text.count(" — ") == 1, text
    assert text.count(HINTS[status]) == 1 and text.endswith(HINTS[status]), text
    assert f"HTTP {status}: " in text and SAID[status] in text, text
    assert "{" not in text and "'type'" not in text and "check the API key" not in text, text
    assert KEY not in text and KEY[:8] not in text, text


@pytest.mark.parametrize("status", [401, 429, 500])
def test_http_failure_is_one_sentence(status):
    error = http_failure(status, BODIES[status], {"retry-after": "7"}, "openai", "https://api.openai.com/v1",
                         get_spec("openai"))
    _one_sentence(str(error), status)
    assert error.retryable is (status != 401) and error.status == status


@pytest.mark.parametrize("status", [401, 429, 500])
@pytest.mark.parametrize("provider, url", [("openai", "https://api.openai.com/v1"),
                                           ("lmstudio", "http://lms.test:1234/v1")])
def test_a_failed_call_is_one_sentence_on_either_path(status, provider, url, httpx2_mock, monkeypatch):
    """A cloud provider (pydantic-ai's ModelHTTPError) and a local one (nbllm's wire path) say the same."""
    prefix = provider.upper()
    monkeypatch.setenv(f"{prefix}_API_KEY", KEY)
    monkeypatch.setenv(f"{prefix}_BASE_URL", url)
    monkeypatch.setenv(f"{prefix}_MAX_RETRIES", "0")
    nbllm.reinit()
    httpx2_mock.post(f"{url}/chat/completions").respond(status, json=BODIES[status], headers={"retry-after": "7"})
    with pytest.raises(ModelError) as info:
        nbllm.ask("hi", provider=provider, model="m")
    hints = {**HINTS, 401: f"check {prefix}_API_KEY"}
    if provider == "lmstudio":
        hints[500] = "try again later; if it keeps failing, look at the server's log"
    text = str(info.value)
    assert text.startswith(f"{provider} at {url}: HTTP {status}: ")
    assert "\n" not in text and text.count(" — ") == 1 and text.endswith(hints[status]), text
    assert SAID[status] in text and "{" not in text and KEY not in text and KEY[:8] not in text, text


@pytest.mark.parametrize("body, said", [
    ({"detail": "Not authenticated"}, "Not authenticated"),  # FastAPI (vLLM, LiteLLM)
    ({"detail": [{"loc": ["body", "model"], "msg": "field required"}]}, "field required"),
    ([{"error": {"code": 403, "message": "API key not valid.", "status": "PERMISSION_DENIED"}}], "API key not valid"),
    ('{"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}',
     "invalid x-api-key"),
    (b"upstream connect error", "upstream connect error"),
    ("<html><body><h1>502 Bad Gateway</h1></body></html>", ""),
    ({"code": 17}, ""),  # nothing to quote: no raw dict either
    ({"error": {"message": "word " * 80}}, None),
])
def test_the_servers_own_message_is_extracted_and_shortened(body, said):
    text = server_message(body)
    if said is None:
        assert len(text) <= 160 and text.endswith("…") and not text.endswith(" …")
    else:
        assert text == said


def test_a_key_echoed_by_the_server_is_masked():
    said = server_message({"error": {"message": f"key {KEY} refused; Bearer {KEY} sent"}})
    assert KEY not in said and "sk-messages" not in said and said.startswith("key *** refused")
