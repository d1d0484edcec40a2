#!/usr/bin/env python
"""Execute the example notebooks top to bottom and store them with their outputs.

    python scripts/execute_notebooks.py                      # re-execute notebooks/*.ipynb in place
    python scripts/execute_notebooks.py --output-dir executed  # write executed copies there instead

Stored outputs are what `pytest --nbval notebooks` compares, so every run uses the
same conditions: the kernel starts in the notebook's folder, without any provider
variable from this shell (no keys, no saved default, a throwaway nbllm config) —
the notebooks then run on the embedded model, with no network. `--keep-env` turns
that off (to try the notebooks with your own providers). `NBLLM_EMBEDDED_*`
variables are kept, so `NBLLM_EMBEDDED_MODEL` can point them at another GGUF.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"

__all__ = ["provider_variables", "clean_environment", "execute", "clear_unrun"]


def provider_variables(environ: dict[str, str] | os._Environ[str]) -> list[str]:
    """Every variable in `environ` that would change which provider or model a notebook uses."""
    from nbllm import catalog
    from nbllm.catalog import key_env_names

    prefixes = ["NBLLM_"]
    names: set[str] = set()
    for spec in catalog.all_specs():
        prefixes.append(spec.env_prefix + "_")
        names.update(key_env_names(spec))
        if spec.host_env:
            names.add(spec.host_env)
    return sorted(
        name for name in environ
        if (name in names or name.startswith(tuple(prefixes))) and not name.startswith("NBLLM_EMBEDDED_")
    )


def clean_environment(state_dir: str | Path) -> dict[str, str]:
    """Remove provider variables from `os.environ` (kernels inherit it) and keep nbllm's
    files (config, call log, replay cache) in `state_dir`; returns what was removed."""
    removed = {name: os.environ.pop(name) for name in provider_variables(os.environ)}
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    os.environ["NBLLM_CONFIG"] = str(state / "config.json")
    os.environ["NBLLM_HISTORY"] = str(state / "history.sqlite")
    os.environ["NBLLM_CACHE"] = str(state / "cache.sqlite")
    return removed


def execute(path: Path, output: Path, timeout: float) -> str | None:
    """Run one notebook and write it to `output`; returns the error (None on success)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(path, as_version=4)
    ran: set[int] = set()
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", store_widget_state=True, record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
        extra_arguments=["--IPKernelApp.log_level=ERROR"],  # not the kernel's start-up chatter
        on_cell_execute=lambda cell, cell_index: ran.add(cell_index),
    )
    error = None
    try:
        client.execute()
    except CellExecutionError as exc:
        error = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    except Exception as exc:  # a kernel that died or timed out: report it, go on with the next
        error = f"{type(exc).__name__}: {exc}"
    if error is None or output != path:  # never overwrite a reference notebook with a failed run
        clear_unrun(notebook, ran)
        output.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, output)
    return error


def clear_unrun(notebook: Any, ran: set[int]) -> None:
    """Empty the outputs and execution count of every code cell not in `ran` (the indices
    this run executed): after a failure nbclient stops, and the cells after the failing
    one would still show a previous run's outputs as if this run had produced them."""
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and index not in ran:
            cell.outputs = []
            cell.execution_count = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run (default: notebooks/*.ipynb)")
    parser.add_argument("--output-dir", type=Path, help="write executed copies here (default: in place)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed per cell (default 600)")
    parser.add_argument("--keep-env", action="store_true", help="keep provider variables (keys, servers)")
    args = parser.parse_args(argv)

    paths = args.notebooks or sorted(NOTEBOOKS.glob("*.ipynb"))
    if not paths:
        print(f"no notebooks found in {NOTEBOOKS}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="nbllm-notebooks-") as state_dir:
        removed = {} if args.keep_env else clean_environment(state_dir)
        failures = 0
        for path in paths:
            path = path.resolve()
            if not args.keep_env:  # each notebook starts with no config, history or cache
                clean_environment(Path(state_dir) / path.stem)
            output = (args.output_dir.resolve() / path.name) if args.output_dir else path
            started = time.perf_counter()
            error = execute(path, output, args.timeout)
            took = time.perf_counter() - started
            shown = output.relative_to(ROOT) if output.is_relative_to(ROOT) else output
            if error is None:
                print(f"ok      {shown}  ({took:.1f} s)")
            else:
                failures += 1
                print(f"FAILED  {path.name}: {error}" + (f"  (partial run in {shown})" if output != path else ""))
    if removed:
        print(f"(ran without {', '.join(sorted(removed))}; --keep-env keeps them)")
    if args.output_dir:
        print(f"\nExecuted notebooks are in {args.output_dir.resolve()}/ — open them with `jupyter lab {args.output_dir}`.")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
