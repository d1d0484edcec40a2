"""`%llm_fix`: explain the last failed cell and put the corrected cell below.

A thin face over `nbllm.fix()`: it parses the options, shows the explanation as
Markdown and hands the code to the front end as the next cell (as `%%llm -f code`
does). The failed cells come from the `post_run_cell` hook in `nbllm.cells`; this
magic's own cell is never taken for the cell to fix.
"""

from __future__ import annotations

from typing import Any

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .. import cells
from ..errors import CellError, Interrupted, NbllmError

__all__ = ["FixMagics"]


@magics_class
class FixMagics(Magics):
    """`%llm_fix [N]`: ask a model why a cell failed and for the corrected cell."""

    last_fix: Any = None

    @magic_arguments()
    @argument("cell", nargs="?", type=int, metavar="N",
              help="the number of the failed cell to fix (default: the last cell that failed)")
    @argument("-p", "--provider", help="provider to ask (default: the kernel-wide default, see %%llm_providers)")
    @argument("-m", "--model", help="model id (default: the provider's configured model)")
    @argument("--explain-only", action="store_true", help="explain the error; insert no corrected cell")
    @line_magic
    def llm_fix(self, line: str) -> None:
        """Explain why a cell failed and put the corrected cell in a new cell below.

        The model gets the failed cell's source, its traceback and, for the names the cell
        uses, their type and shape, length, dtypes or columns — never their values. It
        answers with one paragraph (shown as Markdown) and the corrected cell, which is
        inserted below this one (nothing is run). Equivalent to `nbllm.fix(N, ...)`.
        """
        args = parse_argstring(self.llm_fix, line)
        from ..fixes import fix

        try:
            result = fix(args.cell, provider=args.provider, model=args.model, explain_only=args.explain_only,
                         shell=self.shell)
        except NbllmError as exc:
            raise cells.not_a_cell_error(CellError(str(exc))) from None
        except KeyboardInterrupt:
            raise cells.not_a_cell_error(Interrupted("interrupted, the request was cancelled")) from None
        self.last_fix = result
        self._show(result, args.explain_only)
        if result.code and result.code.strip() and self.shell is not None:
            self.shell.set_next_input(result.code, replace=False)

    @staticmethod
    def _show(result: Any, explain_only: bool) -> None:
        from IPython.display import display

        text = result.explanation or "(the model gave no explanation)"
        if result.code is not None:
            text += "\n\n*The corrected cell is below; it has not been run.*"
        elif not explain_only and result.note:
            text += f"\n\n*nbllm: {result.note}.*"
        display({"text/markdown": text, "text/plain": text}, raw=True,
                metadata={"nbllm": {**result.answer.metadata(), "fixed_cell": result.cell}})
