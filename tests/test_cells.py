"""Failed cells kept through IPython's post_run_cell event: `Err`, `Err[n]`, plain-text tracebacks."""

from __future__ import annotations

import pytest
from conftest import nbllm_shell, reset_nbllm

from nbllm import cells
from nbllm.cells import MAX_KEPT, ErrorHistory, FailedCell, notebook_names

SECRET = "sk-cells-secret-0123456789abcdef"


@pytest.fixture
def ip():
    reset_nbllm()
    with nbllm_shell() as shell:
        yield shell


def run(shell, source: str):
    """Run a cell as a notebook does (numbered, in history), quietly."""
    from IPython.utils.capture import capture_output

    with capture_output():
        return shell.run_cell(source, store_history=True)


def err(shell) -> ErrorHistory:
    return notebook_names(shell)["Err"]


def test_err_is_the_failed_cells_exception_as_plain_text(ip):
    source = "def f(x):\n    return 1 / x\n\nf(0)"
    result = run(ip, source)
    number, exc = result.execution_count, result.error_in_exec
    failed = err(ip)[number]
    assert isinstance(failed, FailedCell) and err(ip).last is failed
    assert (failed.number, failed.source, failed.type, failed.message) == (number, source, type(exc).__name__, str(exc))
    text = str(err(ip))
    assert text == str(failed)
    assert text.startswith(f"cell [{number}] raised ZeroDivisionError: division by zero\n"
                           f"Traceback (most recent call last):\n  File \"In[{number}]\", line 4, in <module>\n")
    assert f'File "In[{number}]", line 2, in f\n    return 1 / x' in text
    assert text.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "\x1b" not in text  # no ANSI colours


def test_ipython_frames_are_left_out(ip):
    run(ip, "import json\njson.loads('{')")
    text = err(ip).last.traceback
    assert "interactiveshell" not in text and "IPython" not in text and "run_code" not in text
    first_frame = text.splitlines()[1]
    assert first_frame.startswith('  File "In[') and "<module>" in first_frame
    assert "json/decoder.py" in text  # library frames below the cell stay: they say where it failed


def test_a_syntax_error_before_execution_is_kept(ip):
    result = run(ip, "x = (1,\ny = 2")
    assert result.error_before_exec is not None
    failed = err(ip)[result.execution_count]
    assert failed.type == "SyntaxError" and failed.message == result.error_before_exec.msg
    assert f'File "In[{result.execution_count}]", line 1' in failed.traceback and "^" in failed.traceback
    assert "compilerop" not in failed.traceback and "interactiveshell" not in failed.traceback
    assert str(failed).startswith(f"cell [{result.execution_count}] raised SyntaxError: ")


def test_a_chained_exception_keeps_both(ip):
    run(ip, "try:\n    {}['a']\nexcept KeyError as e:\n    raise ValueError('no a') from e")
    text = err(ip).last.traceback
    assert "KeyError: 'a'" in text and "direct cause" in text and text.rstrip().endswith("ValueError: no a")


def test_a_cell_that_did_not_fail_is_a_key_error_and_str_says_none(ip):
    assert not err(ip) and "no cell has failed" in str(err(ip)) and err(ip).last is None
    ok = run(ip, "y = 1")
    bad = run(ip, "y / 0")
    with pytest.raises(KeyError):
        err(ip)[ok.execution_count]
    assert err(ip)[bad.execution_count].type == "ZeroDivisionError"
    assert ok.execution_count not in err(ip) and bad.execution_count in err(ip)


def test_the_store_keeps_the_last_fifty(ip):
    numbers = [run(ip, f"raise RuntimeError('failure {i}')").execution_count for i in range(MAX_KEPT + 5)]
    history = err(ip)
    assert len(history) == MAX_KEPT and history.numbers() == numbers[5:]
    with pytest.raises(KeyError):
        history[numbers[4]]
    assert history.last.message == f"failure {MAX_KEPT + 4}" and history[numbers[5]].message == "failure 5"


def test_keys_never_reach_the_kept_text(ip):
    run(ip, f"token = '{SECRET}'\nraise ValueError('bad key ' + token)")
    failed = err(ip).last
    assert SECRET not in str(failed) and SECRET not in failed.source and SECRET not in failed.message
    assert "bad key ***" in failed.message


def test_prompt_filling_uses_err_and_leaves_a_cell_that_did_not_fail(ip):
    from nbllm.interpolate import interpolate

    bad = run(ip, "undefined_name + 1").execution_count
    text = interpolate(f"Why? {{Err}} / {{Err[{bad}]}} / {{Err[999]}}", notebook_names(ip))
    expected = str(err(ip)[bad])
    assert text == f"Why? {expected} / {expected} / {{Err[999]}}"
    assert "NameError: name 'undefined_name' is not defined" in expected


def test_the_hook_is_post_run_cell_not_set_custom_exc(ip):
    assert ip.custom_exceptions == ()
    hooks = [h for h in ip.events.callbacks["post_run_cell"] if h.__name__ == "post_run_cell"
             and h.__module__ == "nbllm.cells"]
    assert len(hooks) == 1
    ip.extension_manager.unload_extension("nbllm")
    ip.extension_manager.load_extension("nbllm")  # loading again: still one hook
    assert len([h for h in ip.events.callbacks["post_run_cell"] if h.__module__ == "nbllm.cells"]) == 1


def test_after_unload_nothing_is_kept(ip):
    run(ip, "1 / 0")
    assert err(ip)
    ip.extension_manager.unload_extension("nbllm")
    try:
        assert not any(h.__module__ == "nbllm.cells" for h in ip.events.callbacks["post_run_cell"])
        run(ip, "1 / 0")
        assert not cells.history_for(ip) and not cells.registered(ip)
        assert notebook_names(ip) == {}  # {Err} stays as written
    finally:
        ip.extension_manager.load_extension("nbllm")  # nbllm_shell unloads it at the end


def test_an_exception_whose_str_fails_is_still_kept():
    class Odd(Exception):
        def __str__(self):
            raise RuntimeError("no")

    try:
        raise Odd()
    except Odd as exc:
        failed = cells.failed_cell(4, "raise Odd()", exc)
    assert failed.type == "Odd" and "could not be read" in failed.message
    assert failed.traceback.splitlines()[0] == "Traceback (most recent call last):"
    assert "raise Odd()" in failed.traceback and str(failed).startswith("cell [4] raised Odd: ")


def test_a_library_internal_cause_keeps_its_line_and_paths_are_short(ip):
    import sys

    run(ip, "import pandas as pd\nsales = pd.DataFrame({'units': [1, 2]})")
    run(ip, "growth = sales['unit'].pct_change()")
    text = str(err(ip))
    assert text.count("KeyError: 'unit'") >= 2  # the cause's line and the error itself
    assert "hashtable" not in text and "index.pyx" not in text  # pandas' internals behind the cause
    assert 'File "In[' in text and "sales['unit']" in text  # the user's own frame stays
    assert 'File "pandas/core/frame.py"' in text  # a library frame, from its package on
    assert "site-packages" not in text and sys.prefix not in text


@pytest.mark.parametrize("source", [
    "raise KeyboardInterrupt",
    "raise SystemExit(3)",
    "from nbllm.errors import Interrupted\nraise Interrupted('interrupted, the request was cancelled')",
    "class Stop(KeyboardInterrupt):\n    pass\nraise Stop()",
])
@pytest.mark.filterwarnings("ignore:To exit")
def test_an_interrupt_or_exit_is_not_a_failed_cell(ip, source):
    bad = run(ip, "1 / 0").execution_count
    stopped = run(ip, source)
    assert stopped.error_in_exec is not None  # IPython did see it
    assert err(ip).last is err(ip)[bad] and stopped.execution_count not in err(ip) and len(err(ip)) == 1


def test_an_exception_marked_as_nbllms_own_is_not_kept(ip):
    run(ip, "1 / 0")
    marked = cells.not_a_cell_error(ValueError("nbllm's answer"))
    assert marked is not None and getattr(marked, cells.NOT_A_CELL_ERROR) is True
    ip.user_ns["marked"] = marked
    run(ip, "raise marked")
    assert err(ip).last.type == "ZeroDivisionError" and len(err(ip)) == 1


def test_a_key_known_only_later_is_masked_in_an_older_err(ip, monkeypatch):
    from nbllm import errors

    late = "plain-later-credential-4242"  # no key shape: only the known-keys list can mask it
    monkeypatch.setattr(errors, "_known", errors._known)  # restored after the test
    monkeypatch.setattr(errors, "_known_pattern", errors._known_pattern)
    run(ip, f"raise ValueError('rejected {late}')")
    assert late in str(err(ip))  # not known yet when the cell failed
    errors.remember_secrets([late])
    assert late not in str(err(ip)) and late not in str(err(ip).last) and "rejected ***" in str(err(ip))
