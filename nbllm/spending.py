"""`nbllm.spend(by=...)`: what the logged calls cost, as a DataFrame (and a bar chart when asked).

Read from the call log (`nbllm.history`) with one grouped SQL query, so a log of a million rows is
summed in SQLite, not in pandas. Answers replayed from the cache cost nothing and are left out;
calls whose cost is unknown (a model genai-prices does not list, no declared price) are counted in
`unknown_cost`, never as 0. Local servers cost 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["spend"]

_GROUPS = {"provider": "COALESCE(provider, '?')", "model": "COALESCE(provider, '?') || ':' || COALESCE(model, '?')",
           "day": "substr(time, 1, 10)"}
COLUMNS = ["calls", "input_tokens", "output_tokens", "cost_usd", "unknown_cost"]


def spend(by: str = "provider", since: str | None = None, plot: bool = False) -> "pd.DataFrame":
    """Cost per provider, `provider:model` or day (UTC), most expensive first (days in order).

    Columns: calls, input_tokens, output_tokens, cost_usd (what is known), unknown_cost (calls
    whose price nbllm does not know). `since="2026-12-01"` counts calls from that day on.
    `plot=True` also draws it (matplotlib, imported only then); `.plot()` on the result works too.
    """
    import pandas as pd

    from . import calllog

    if by not in _GROUPS:
        raise ConfigurationError(f"spend(by={by!r}): give one of {', '.join(repr(k) for k in _GROUPS)}.")
    where, params = "outcome != 'cached'", []
    if since is not None:
        if not isinstance(since, str) or len(since) < 10 or not since[:4].isdigit():
            raise ConfigurationError(f"spend(since={since!r}): give a day as 'YYYY-MM-DD'.")
        where += " AND time >= ?"
        params.append(since)
    query = (f"SELECT {_GROUPS[by]} AS {by}, COUNT(*), COALESCE(SUM(input_tokens), 0), "
             f"COALESCE(SUM(output_tokens), 0), COALESCE(SUM(cost_usd), 0), "
             f"SUM(cost_usd IS NULL AND outcome IN ('ok', 'partial')) FROM calls WHERE {where} GROUP BY 1")
    rows = calllog.query(query, params)
    frame = pd.DataFrame(rows, columns=[by, *COLUMNS]).set_index(by)
    frame = frame.astype({"calls": "int64", "input_tokens": "int64", "output_tokens": "int64",
                          "cost_usd": "float64", "unknown_cost": "int64"})
    frame = frame.sort_index() if by == "day" else frame.sort_values("cost_usd", ascending=False, kind="stable")
    if plot:
        _draw(frame, by)
    return frame


def _draw(frame: "pd.DataFrame", by: str) -> Any:
    """A bar of USD per group (`plots.spend_chart`: matplotlib is imported there, only now)."""
    from .plots import spend_chart

    return spend_chart(frame, by)
