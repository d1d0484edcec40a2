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
    label = ip.user_ns["df"].dtypes["label"]  # object or str, by the pandas version
    assert f"- df: pandas DataFrame: 2 rows, 2 columns: n (int64), label ({label})" in prompt
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


def test_a_fix_as_a_cells_last_value_is_readable(ip, local_provider):
    bad = run(ip, "total, count = 3, 0\ntotal / count")[0].execution_count
    result, _, printed = run(ip, "import nbllm\nnbllm.fix()")
    fixed = result.result
    assert isinstance(fixed, nbllm.Fix) and printed.count("\n") == 1  # Out[n]: one short line
    assert repr(fixed) == f"<Fix for cell [{bad}]: 'The count is zero, so the division fails.', 1 line of code>"
    assert repr(fixed) in printed and "prompt" not in printed and "Answer(" not in printed
    data, _ = ip.display_formatter.format(fixed)
    assert data["text/plain"] == repr(fixed)
    assert data["text/markdown"] == (
        "The count is zero, so the division fails.\n\n```python\nresult = total / max(count, 1)\n```\n\n"
        "*Copy it into a cell, or use `%llm_fix` to get it in a new cell below.*")
    local_provider.set(reply="Line one.\nLine two " + "long " * 30)
    explained = nbllm.fix(explain_only=True, shell=ip)
    assert repr(explained) == f"<Fix for cell [{bad}]: 'Line one.', no code>"
    assert explained._repr_markdown_() == explained.explanation and "Copy it" not in explained._repr_markdown_()
    multi = nbllm.Fix(explanation="x" * 200, code="a = 1\nb = 2\n", answer=None, cell=None, prompt="P" * 5000)
    assert repr(multi) == f"<Fix for a cell: '{'x' * 69}…', 2 lines of code>"


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
    long_why = "Why: the count is zero, and dividing by it raises before the result is ever assigned."
    assert parse_reply(f"{long_why}\n```python\nx\n```", explain_only=True) == (long_why, None, None)
    # explain-only and little text outside the blocks: the whole reply, blocks included
    assert parse_reply("Why.\n```python\nx\n```", explain_only=True) == ("Why.\n```python\nx\n```", None, None)


def test_text_that_runs_into_the_code_block_is_kept():
    listed = ("Three things are wrong:\n1. `count` is zero.\n2. `total` is a str.\n3. Change the division to:\n"
              "```python\nresult = int(total) / max(count, 1)\n```")
    explanation, code, note = parse_reply(listed)
    assert explanation.endswith("2. `total` is a str.\n3. Change the division to:")
    assert code == "result = int(total) / max(count, 1)" and note is None
    heading = "The count is zero.\n\n### The division\n```python\nx = 1\n```"
    assert parse_reply(heading)[0] == "The count is zero.\n\n### The division"
    colon = "The count is zero, so this line fails:\n```python\nresult = total / count\n```"
    assert parse_reply(colon)[0] == "The count is zero, so this line fails:"
    for intro in ("Here is the corrected cell:", "**Fixed code:**", "Corrected version:"):  # only announced the code
        assert parse_reply(f"The count is zero.\n{intro}\n```python\nx = 1\n```")[0] == "The count is zero."


def test_explain_only_shows_a_short_reply_whole(ip, local_provider):
    short = "The error:\n```\nZeroDivisionError: count is 0\n```"
    listed = ("Two causes:\n1. The count is zero.\n2. Guard it like this:\n```python\nx = 1 / max(count, 1)\n```\n"
              "Then run the cell again; the division now always has a nonzero divisor to work with.")
    local_provider.set(reply=None, replies=[short, listed])
    run(ip, "count = 0")
    run(ip, "1 / count")
    _, outputs, printed = run(ip, "%llm_fix --explain-only")
    assert outputs[0]["data"]["text/markdown"] == short, printed
    _, outputs, printed = run(ip, "%llm_fix --explain-only")
    markdown = outputs[0]["data"]["text/markdown"]
    assert markdown.startswith("Two causes:\n1. The count is zero.\n2. Guard it like this:\n"), printed
    assert markdown.endswith("nonzero divisor to work with.") and "```" not in markdown
    assert ip.inserted == []


# --- describing names without their values -----------------------------------------------------
def test_describe_value_never_shows_values():
    import numpy as np
    import pandas as pd

    assert describe_value(pd.Series([7, 8], name="price")) == "pandas Series price: 2 values, dtype int64"
    assert describe_value(pd.Index([3, 4, 5])) == "pandas Index, length 3, dtype int64"
    categorical = describe_value(pd.Series(["TIGER-9"], dtype="category"))
    assert categorical.endswith("1 value, dtype category") and "TIGER" not in categorical
    assert describe_value(np.zeros((2, 3), dtype="float32")) == "numpy.ndarray, shape (2, 3), dtype float32"
    assert describe_value(np.float64(3.5)) == "numpy.float64"
    assert describe_value(3.25) == "float" and describe_value(None) == "NoneType"
    assert describe_value("secret text") == "str, len 11"
    assert describe_value(()) == "tuple, len 0"
    assert describe_value(np) is None and describe_value(len) == "function" and describe_value(dict) == "class"
    wide = pd.DataFrame({f"c{i}": [i] for i in range(45)})
    assert describe_value(wide).startswith("pandas DataFrame: 1 row, 45 columns: c0 (int64), c1 (int64)")
    assert describe_value(wide).endswith("c39 (int64), … 5 more")

    class Sized:
        def __len__(self):
            return 4

    assert describe_value(Sized()).endswith("Sized, len 4")


def test_used_names_reads_loads_and_survives_magics_and_syntax_errors(ip):
    assert used_names("y = df.col + f(x)\nz = y", ip) == ["df", "f", "x"]  # y is the cell's own
    assert {"a", "b"} <= set(used_names("%time total = a + b", ip))
    assert {"c", "d"} <= set(used_names("%%timeit -n 1\nc + d", ip))
    assert used_names("x = (a +", ip) == ["a"]


def test_names_the_cell_binds_first_are_not_used():
    assert used_names("x = 1\nprint(x + y)") == ["print", "y"]
    assert used_names("x = x + 1") == ["x"] and used_names("x += 1") == ["x"]  # read before bound
    assert used_names("for i in xs:\n    total = i + j") == ["xs", "j"]
    assert used_names("[v for v in data if v > lim]") == ["data", "lim"]
    assert used_names("import numpy as np\ndef f():\n    return f\nclass K: pass\nnp.sum(K, f(), q)") == ["q"]
    assert used_names("with open(p) as fh:\n    fh.read(n)") == ["open", "p", "n"]


def test_a_cell_that_does_not_parse_leaves_out_the_names_it_defines(ip):
    ip.user_ns.update(f=3, rows=[1, 2], limit=3)
    assert used_names("def f(:", ip) == []
    source = "import math as m\nclass K:\n    pass\nn, total = 0, 0\nfor r in rows:\n    total += r * limit (\n"
    assert used_names(source, ip) == ["math", "rows", "limit"]
    run(ip, "def f(:\n    return rows")
    prompt = nbllm.fix(shell=ip).prompt
    assert "def f(:" in prompt and "- rows: list, len 2" in prompt and "- f:" not in prompt


# --- a real kernel ---------------------------------------------------------------------------------
@pytest.mark.kernel
def test_llm_fix_in_a_real_kernel(notebook, server):
    server.set(reply=REPLY)
    cells_, replies = notebook("count = 0\ntotal = 7", "result = total / count", "%llm_fix", "nbllm.fix()",
                               allow_errors=True)
    assert [r["content"]["status"] for r in replies] == ["ok", "error", "ok", "ok"]
    inserted = [[p for p in r["content"]["payload"] if p["source"] == "set_next_input"] for r in replies[2:]]
    assert inserted == [[{"source": "set_next_input", "text": "result = total / max(count, 1)", "replace": False}],
                        []]  # the API's Fix is a value: nbllm.fix() inserts nothing
    prompt = server.chat_requests()[-1]["body"]["messages"][-1]["content"]
    assert "result = total / count" in prompt and "ZeroDivisionError: division by zero" in prompt
    assert "Traceback (most recent call last):" in prompt and "- count: int" in prompt
    assert "ipykernel" not in prompt and "\x1b" not in prompt
    shown = [o for o in cells_[2].outputs if o.output_type == "display_data"]
    assert shown[0].data["text/markdown"].startswith("The count is zero")
    (value,) = [o for o in cells_[3].outputs if o.output_type == "execute_result"]  # the API's Fix as a value
    assert value.data["text/markdown"].startswith("The count is zero, so the division fails.\n\n```python\n")
    assert "use `%llm_fix` to get it in a new cell below" in value.data["text/markdown"]
    assert value.data["text/plain"].startswith("<Fix for cell [") and "prompt" not in value.data["text/plain"]


# --- which failures are cells to fix ------------------------------------------------------------
def test_a_failing_fix_call_does_not_replace_the_failed_cell(ip, local_provider):
    bad = run(ip, "missing_name + 1")[0].execution_count
    result, _, printed = run(ip, "import nbllm\nnbllm.fix(provider='nope')")
    error = result.error_in_exec
    assert isinstance(error, nbllm.NbllmError), printed
    assert error.__cause__ is None and error.__context__ is None and "\n" not in str(error)
    assert cells.history_for(ip).last is cells.history_for(ip)[bad] and len(cells.history_for(ip)) == 1
    local_provider.set(mode="error", status=500)
    result, _, printed = run(ip, "nbllm.fix()")  # the provider fails: still not a cell to fix
    assert isinstance(result.error_in_exec, nbllm.NbllmError), printed
    assert cells.history_for(ip).last.number == bad and len(cells.history_for(ip)) == 1


def test_a_failed_llm_magic_is_not_a_cell_to_fix_but_code_after_a_line_magic_is(ip, local_provider):
    bad = run(ip, "missing_name + 1")[0].execution_count
    local_provider.set(mode="error", status=500)
    for source in ("%%llm\nWhy is the sky blue?", "%llm Say why the sky is blue", "%llm -p nope hello",
                   "%%llm --no-such-option\nhello"):
        result, _, printed = run(ip, source)
        assert not result.success, (source, printed)
        assert cells.history_for(ip).last.number == bad and len(cells.history_for(ip)) == 1, source
    local_provider.set(mode="ok")
    failing = run(ip, "%llm -o reply hello\nother_missing + 1")[0]
    assert isinstance(failing.error_in_exec, NameError)
    assert cells.history_for(ip).last.number == failing.execution_count  # the Python after the magic failed
