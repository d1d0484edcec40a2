"""`pytest --nbval notebooks`: run each notebook under the conditions its outputs were stored in.

scripts/execute_notebooks.py stores the reference outputs with no provider
variables and fresh nbllm files (config, call log, replay cache) per notebook;
nbval's kernels inherit this process's environment, so the same is set here
before each notebook's kernel starts (and undone when the session ends).

Why at the root and not in notebooks/: two conftest.py files outside packages
are both imported as the module `conftest`, and tests/ imports helpers from its
own (`from conftest import reset_nbllm`); the root one is always loaded first,
so tests/conftest.py stays the one that name refers to.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "scripts"))

from execute_notebooks import clean_environment  # noqa: E402

_state: dict[str, object] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before the first cell of a notebook (when nbval starts its kernel), clean the environment."""
    path = Path(str(item.path))
    if path.suffix != ".ipynb" or _state.get("notebook") == path:
        return
    if "environ" not in _state:
        _state["environ"] = dict(os.environ)
        _state["dir"] = tempfile.mkdtemp(prefix="nbllm-nbval-")
    _state["notebook"] = path
    clean_environment(Path(str(_state["dir"])) / path.stem)


def pytest_unconfigure(config: pytest.Config) -> None:
    saved = _state.pop("environ", None)
    if isinstance(saved, dict):
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(str(_state.pop("dir")), ignore_errors=True)
