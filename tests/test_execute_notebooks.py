"""scripts/execute_notebooks.py: an executed copy shows only what its own run produced."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from execute_notebooks import execute

pytestmark = pytest.mark.kernel


def _stored(source: str, text: str, count: int):
    """A code cell carrying the outputs of an earlier run."""
    return new_code_cell(source, execution_count=count, outputs=[new_output("stream", name="stdout", text=text)])


def test_a_failed_notebook_keeps_no_stale_output_after_the_failing_cell(tmp_path: Path):
    source = tmp_path / "stale.ipynb"
    nb = new_notebook(cells=[
        _stored("print('one, this run')", "one, an EARLIER run\n", 1),
        _stored("raise ValueError('cell two broke')", "two, an EARLIER run\n", 2),
        new_markdown_cell("text between"),
        _stored("print('three')", "STALE three from an EARLIER run\n", 3),
        _stored("print('four')", "STALE four\n", 4),
    ])
    nbformat.write(nb, source)
    copy = tmp_path / "executed" / "stale.ipynb"

    error = execute(source, copy, timeout=60)

    assert error is not None and "ValueError" in error
    cells = nbformat.read(copy, as_version=4).cells
    assert [o.get("text") for o in cells[0].outputs] == ["one, this run\n"]
    assert cells[0].execution_count == 1
    (failure,) = cells[1].outputs
    assert failure.output_type == "error" and failure.ename == "ValueError" and failure.evalue == "cell two broke"
    assert cells[1].execution_count == 2
    for cell in cells[3:]:  # never ran in this run: nothing from the earlier one is left
        assert cell.outputs == [] and cell.execution_count is None
    assert "EARLIER" not in copy.read_text()
    assert nbformat.read(source, as_version=4).cells[3].outputs[0].text.startswith("STALE")  # the source is untouched
