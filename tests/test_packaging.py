"""The sdist is a source tree that runs its own tests: it carries every file the test-suite imports or opens.

Why one test: building an sdist (an isolated build environment) takes seconds, so one build is checked
for its members and then used to run a few tests from the unpacked tree.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

SOURCE = Path(__file__).resolve().parents[1]
# Never copied: a stale nbllm.egg-info/SOURCES.txt is read back by setuptools and would keep files in the
# sdist that MANIFEST.in no longer names, so the build starts from the tree as a clone has it.
_TOP_IGNORED = {".git", "build", "dist", "artifacts", "executed", ".pytest_cache"}
_ALWAYS_IGNORED = ("__pycache__", "*.pyc", "*.egg-info", ".venv*", ".env")
# Run from the unpacked sdist: the root conftest (which imports scripts/execute_notebooks.py), tests/conftest.py
# (which imports tests/fakeserver.py) and the tests named here, one of them against the fake server.
_SUBSET = ["tests/test_execute_notebooks.py", "tests/test_ask.py"]  # test_ask: nbllm against tests/fakeserver.py


def _ignore(directory: str, names: list[str]) -> set[str]:
    ignored = set(shutil.ignore_patterns(*_ALWAYS_IGNORED)(directory, names))
    if Path(directory) == SOURCE:
        ignored |= _TOP_IGNORED & set(names)
    return ignored


def _files(root: Path, folder: str) -> set[str]:
    return {p.relative_to(root).as_posix() for p in (root / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def _needed_by_tests(root: Path) -> set[str]:
    """Every file the test-suite imports, opens or runs, found in its sources (nothing listed by hand)."""
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    needed = {"pyproject.toml", "LICENSE", "conftest.py"} | _files(root, "nbllm")
    for folder in config["testpaths"]:  # tests/ and the notebooks nbval checks, whole
        needed |= _files(root, folder)
    by_name: dict[str, set[str]] = {}
    for path in _files(root, "tests") | _files(root, "scripts") | _files(root, "notebooks") | {"conftest.py"}:
        by_name.setdefault(Path(path).name, set()).add(path)
    for source in sorted(n for n in needed if n.endswith(".py")):
        for node in ast.walk(ast.parse((root / source).read_text(), source)):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] + ".py" for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module.split(".")[0] + ".py"]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = [node.value]  # a file named in a path: "check_embedded.py", "panel.ipynb"
            else:
                continue
            for name in names:
                needed |= by_name.get(name, set())
    readme = (root / "README.md").read_text()
    needed |= {m for m in re.findall(r"scripts/[\w.-]+\.(?:sh|py)", readme) if (root / m).is_file()}
    return needed


def test_the_sdist_carries_its_tests_and_runs_them(tmp_path: Path) -> None:
    tree = tmp_path / "clone"
    shutil.copytree(SOURCE, tree, ignore=_ignore)
    built = subprocess.run([sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path / "dist"), str(tree)],
                           capture_output=True, text=True, timeout=180)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (archive,) = (tmp_path / "dist").glob("nbllm-*.tar.gz")

    with tarfile.open(archive) as tar:
        top = tar.getnames()[0].split("/")[0]
        members = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n and tar.getmember(n).isfile()}
        tar.extractall(tmp_path / "unpacked", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    missing = sorted(_needed_by_tests(tree) - members)
    assert not missing, f"the sdist lacks files its tests need: {missing} (add them to MANIFEST.in)"
    assert "LICENSE" in members and "MIT License" in (tmp_path / "unpacked" / top / "LICENSE").read_text()
    assert not [m for m in members if "__pycache__" in m or m.endswith(".pyc")]

    unpacked = tmp_path / "unpacked" / top
    env = {**os.environ, "PYTHONPATH": str(unpacked), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    where = subprocess.run([sys.executable, "-c", "import nbllm; print(nbllm.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, env=env, timeout=60)
    assert Path(where.stdout.strip()).is_relative_to(unpacked), where.stdout + where.stderr  # not the checkout's
    ran = subprocess.run([sys.executable, "-m", "pytest", *_SUBSET, "-q", "-p", "no:cacheprovider"], cwd=unpacked,
                         capture_output=True, text=True, env=env, timeout=120)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-2000:]
    assert re.search(r"\b\d+ passed\b", ran.stdout) and " failed" not in ran.stdout, ran.stdout[-3000:]
