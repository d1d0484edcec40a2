"""`nbllm.fix()` and `%llm_fix` against the fake server (which records request bodies), in an
InteractiveShell and in a real kernel."""

from __future__ import annotations

import json

import pytest
from conftest import nbllm_shell, reset_nbllm
from test_kernel import kernel, notebook, server  # noqa: F401 - the shared real-kernel fixtures

import nbllm
from nbllm import cells
from nbllm.errors import CellError, ConfigurationError
from nbllm.fixes import SYSTEM, SYSTEM_EXPLAIN, describe_value, parse_reply, used_names

SECRET = "sk-fix-secret-abcdef0123456789"
REPLY = "The count is zero, so the division fails.\n\nHere is the corrected cell:\n```python\nresult = total / max(count, 1)\n```"


@pytest.fixture
def ip(local_provider, monkeypatch):
    monkeypatch.setenv("LMSTUDIO_MAX_RETRIES", "0")
    monkeypatch.setenv("LMSTUDIO_TIMEOUT", "5")
    monkeypatch.setenv("LMSTUDIO_API_KEY", SECRET)
    local_provider.set(reply=REPLY)
    reset_nbllm()
    with nbllm_shell() as shell:
        inserted: list[tuple[str, bool]] = []
        monkeypatch.setattr(shell, "set_next_input", lambda text, replace=False: inserted.append((text, replace)))
        shell.inserted = inserted
        yield shell


def run(shell, source: str):
    """A numbered cell, as a notebook runs it: (result, displays, printed text)."""
    from IPython.utils.capture import capture_output

    with capture_output() as captured:
        publisher = shell.display_pub
        before = len(getattr(publisher, "outputs", []))
        result = shell.run_cell(source, store_history=True)
    return result, list(getattr(publisher, "outputs", []))[before:], captured.stdout + captured.stderr


def sent(fake) -> tuple[str, str]:
    """The (system, user) texts of the last chat request."""
    messages = fake.chat_requests()[-1]["body"]["messages"]
    return messages[0]["content"], messages[-1]["content"]


SETUP = """import numpy as np, pandas as pd
df = pd.DataFrame({"n": [1, 2], "label": ["ZEBRA-4217", "ok"]})
arr = np.array([10, 20, 30])
items = [1, 2, "ZEBRA-list"]
table = {"ZEBRA-key": 1.5}
token = "PURPLE-OCTOPUS-99"
count = 0
name = "FILLED-IN"
"""
FAILING = """total = int(df["n"].sum() + arr.sum()) + len(items) + len(table)
label = token.upper() + f"{name}" + "{shell} {failed} {SYSTEM}"
result = total / count"""


def test_llm_fix_sends_source_traceback_and_shapes_but_no_values(ip, local_provider):
    run(ip, SETUP)
    failed, _, _ = run(ip, FAILING)
    n = failed.execution_count
    result, outputs, printed = run(ip, "%llm_fix")
    assert result.success, printed
    system, prompt = sent(local_provider)
    assert system == SYSTEM
    assert FAILING in prompt  # the source, braces and {name} as written
    assert f"cell [{n}] raised ZeroDivisionError: division by zero\nTraceback (most recent call last):" in prompt
    assert f'File "In[{n}]", line 3, in <module>\n    result = total / count' in prompt
    df = ip.user_ns["df"]
    columns = ", ".join(f"{c} ({t})" for c, t in df.dtypes.items())
    assert f"- df: pandas DataFrame, shape (2, 2), columns: {columns}" in prompt
    assert "- arr: numpy.ndarray, shape (3,), dtype int64" in prompt
    assert "- items: list, len 3, items: int, str" in prompt
    assert "- table: dict, len 1, keys: str, values: float" in prompt
    assert "- token: str, len 17" in prompt and "- count: int" in prompt and "- name: str, len 9" in prompt
    assert "- np:" not in prompt and "- pd:" not in prompt  # modules are not described
    body = json.dumps(local_provider.chat_requests()[-1]["body"])
    for value in ("ZEBRA", "PURPLE-OCTOPUS", "FILLED-IN", "10, 20, 30"):
        assert value not in body
    assert "interactiveshell" not in prompt and "\x1b" not in prompt


def test_llm_fix_shows_the_explanation_and_inserts_exactly_one_cell(ip, local_provider):
    run(ip, "count = 0\ntotal = 3")
    run(ip, "result = total / count")
    result, outputs, printed = run(ip, "%llm_fix")
    assert result.success, printed
    assert ip.inserted == [("result = total / max(count, 1)", False)]
    (shown,) = outputs
    markdown = shown["data"]["text/markdown"]
    assert markdown.startswith("The count is zero, so the division fails.")
    assert "Here is the corrected cell" not in markdown and "```" not in markdown
    assert shown["metadata"]["nbllm"]["provider"] == "lmstudio"
    fixed = ip.magics_manager.registry["FixMagics"].last_fix
    assert fixed.code == "result = total / max(count, 1)" and fixed.answer.text == REPLY


def test_explain_only_inserts_nothing(ip, local_provider):
    local_provider.set(reply="The count is zero; guard the division.")
    run(ip, "count = 0")
    run(ip, "1 / count")
    result, outputs, printed = run(ip, "%llm_fix --explain-only")
    assert result.success, printed
    assert ip.inserted == []
    system, prompt = sent(local_provider)
    assert system == SYSTEM_EXPLAIN and "```python block" not in prompt
    assert outputs[0]["data"]["text/markdown"] == "The count is zero; guard the division."


def test_nothing_failed_is_one_line_and_is_not_kept_as_a_failure(ip, local_provider):
    result, outputs, printed = run(ip, "%llm_fix")
    assert isinstance(result.error_in_exec, CellError)
    assert printed.strip() == "nbllm: No cell has failed yet in this kernel: run the cell, then %llm_fix."
    assert outputs == [] and ip.inserted == [] and local_provider.chat_requests() == []
    assert not cells.history_for(ip)  # the magic's own failure is not a cell to fix


def test_a_cell_that_did_not_fail(ip, local_provider):
    bad = run(ip, "1 / 0")[0].execution_count
    ok = run(ip, "x = 1")[0].execution_count
    result, _, printed = run(ip, f"%llm_fix {ok}")
    assert isinstance(result.error_in_exec, CellError) and printed.count("\n") == 1
    assert printed.startswith(f"nbllm: cell {ok} did not fail (the failed cells kept are [{bad}])")
    assert local_provider.chat_requests() == []


def test_llm_fix_n_fixes_that_cell_and_its_own_cell_is_never_the_one(ip, local_provider):
    first = run(ip, "first_undefined + 1")[0].execution_count
    run(ip, "second_undefined + 1")
    local_provider.set(mode="error", status=500)
    result, _, printed = run(ip, "%llm_fix")  # fails: this cell must not become the last failure
    assert isinstance(result.error_in_exec, CellError) and "HTTP 500" in printed and SECRET not in printed
    local_provider.set(mode="ok")
    run(ip, "%llm_fix")
    assert "second_undefined + 1" in sent(local_provider)[1] and "%llm_fix" not in sent(local_provider)[1]
    run(ip, f"%llm_fix {first} -p lmstudio -m other-model")
    body = local_provider.chat_requests()[-1]["body"]
    assert "first_undefined + 1" in body["messages"][-1]["content"] and body["model"] == "other-model"
    assert "second_undefined" not in body["messages"][-1]["content"]
    assert len(ip.inserted) == 2


def test_a_reply_without_code_inserts_nothing_and_says_so(ip, local_provider):
    local_provider.set(reply="The name is misspelt; use `count`.")
    run(ip, "cuont")
    result, outputs, printed = run(ip, "%llm_fix")
    assert result.success and ip.inserted == []
    markdown = outputs[0]["data"]["text/markdown"]
    assert markdown.startswith("The name is misspelt; use `count`.") and "no corrected cell" in markdown


def test_keys_in_the_failed_cell_never_reach_the_request(ip, local_provider):
    run(ip, f"key = '{SECRET}'\nraise ValueError('rejected ' + key)")
    run(ip, "%llm_fix")
    body = json.dumps(local_provider.chat_requests()[-1]["body"])
    assert SECRET not in body and "rejected ***" in body


def test_the_api_returns_a_fix(ip, local_provider):
    bad = run(ip, "total, count = 3, 0\ntotal / count")[0].execution_count
    fixed = nbllm.fix(shell=ip)
    assert isinstance(fixed, nbllm.Fix) and fixed.cell == bad and fixed.note is None
    assert fixed.code == "result = total / max(count, 1)" and "total / count" in fixed.prompt
    assert fixed.explanation == "The count is zero, so the division fails."
    explained = nbllm.fix(bad, explain_only=True, shell=ip)
    assert explained.code is None and explained.cell == bad
    with pytest.raises(ConfigurationError, match="cell must be a cell number"):
        nbllm.fix("3", shell=ip)  # type: ignore[arg-type]


def test_fix_without_a_notebook_says_where_it_works(monkeypatch):
    import IPython

    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    with pytest.raises(ConfigurationError, match="run it in Jupyter or IPython"):
        nbllm.fix()


def test_fix_without_the_extension_says_to_load_it(local_provider):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    assert not cells.registered(shell)
    try:
        with pytest.raises(ConfigurationError, match="run the failing cell again"):
            nbllm.fix(shell=shell)
        assert cells.registered(shell)  # it keeps them from now on
    finally:
        cells.unregister(shell)
    assert local_provider.chat_requests() == []


# --- reading the reply ------------------------------------------------------------------------
@pytest.mark.parametrize("reply, explanation, code", [
    ("Because x.\n```python\nx = 1\n```", "Because x.", "x = 1"),
    ("Because.\n```bash\npip install x\n```\nThen:\n```py\nimport x\n```\n```python\nother()\n```",
     "Because.", "import x"),
    ("Why.\n```\nplain = 1\n```", "Why.", "plain = 1"),
    ("Why.\n\nCorrected cell:\n\n````python\ns = '```'\n````\nDone.", "Why.\n\nCorrected cell:\n\nDone.", "s = '```'"),
])
def test_parse_reply_takes_the_first_python_block(reply, explanation, code):
    got_explanation, got_code, note = parse_reply(reply)
    assert (got_code, note) == (code, None)
    assert got_explanation == explanation


def test_parse_reply_without_fence_or_cut_off():
    assert parse_reply("Just words.") == ("Just words.", None, "no corrected cell: it has no ```python block")
    assert parse_reply("Use:\n```sh\nls\n```")[1:] == (None, "no corrected cell: its code block is sh, not Python")
    explanation, code, note = parse_reply("Cut.\n```python\nx = (1,\n")
    assert (explanation, code) == ("Cut.", "x = (1,") and "cut off" in note
    assert parse_reply("") == ("", None, "the model sent an empty answer")
    assert parse_reply("Why.\n```python\nx\n```", explain_only=True) == ("Why.", None, None)


# --- describing names without their values -----------------------------------------------------
def test_describe_value_never_shows_values():
    import numpy as np
    import pandas as pd

    assert describe_value(pd.Series([7, 8], name="price")) == "pandas Series, length 2, dtype int64, name price"
    assert describe_value(np.zeros((2, 3), dtype="float32")) == "numpy.ndarray, shape (2, 3), dtype float32"
    assert describe_value(np.float64(3.5)) == "numpy.float64"
    assert describe_value(3.25) == "float" and describe_value(None) == "NoneType"
    assert describe_value("secret text") == "str, len 11"
    assert describe_value(()) == "tuple, len 0"
    assert describe_value(np) is None and describe_value(len) == "function" and describe_value(dict) == "class"
    wide = pd.DataFrame({f"c{i}": [i] for i in range(45)})
    assert describe_value(wide).endswith("c39 (int64), … and 5 more")

    class Sized:
        def __len__(self):
            return 4

    assert describe_value(Sized()).endswith("Sized, len 4")


def test_used_names_reads_loads_and_survives_magics_and_syntax_errors(ip):
    assert used_names("y = df.col + f(x)\nz = y", ip) == ["df", "f", "x", "y"]
    assert {"a", "b"} <= set(used_names("%time total = a + b", ip))
    assert {"c", "d"} <= set(used_names("%%timeit -n 1\nc + d", ip))
    assert used_names("x = (a +", ip) == ["x", "a"]


# --- a real kernel ---------------------------------------------------------------------------------
@pytest.mark.kernel
def test_llm_fix_in_a_real_kernel(notebook, server):
    server.set(reply=REPLY)
    cells_, replies = notebook("count = 0\ntotal = 7", "result = total / count", "%llm_fix", allow_errors=True)
    assert [r["content"]["status"] for r in replies] == ["ok", "error", "ok"]
    payloads = replies[-1]["content"]["payload"]
    inserted = [p for p in payloads if p["source"] == "set_next_input"]
    assert inserted == [{"source": "set_next_input", "text": "result = total / max(count, 1)", "replace": False}]
    prompt = server.chat_requests()[-1]["body"]["messages"][-1]["content"]
    assert "result = total / count" in prompt and "ZeroDivisionError: division by zero" in prompt
    assert "Traceback (most recent call last):" in prompt and "- count: int" in prompt
    assert "ipykernel" not in prompt and "\x1b" not in prompt
    shown = [o for o in cells_[2].outputs if o.output_type == "display_data"]
    assert shown[0].data["text/markdown"].startswith("The count is zero")
