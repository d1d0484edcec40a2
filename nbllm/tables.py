"""Tables for people: health and configuration as pandas DataFrames, text or HTML.

Keys never reach a table: rows are built from `ProviderHealth` and the masked
variable listing, which hold no secrets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .health import ProviderHealth

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["HEALTH_COLUMNS", "health_rows", "health_frame", "frame", "to_text"]

HEALTH_COLUMNS = ["provider", "status", "enabled", "connected", "model", "latency_ms", "base_url", "error"]


def health_rows(health: dict[str, ProviderHealth]) -> list[dict[str, Any]]:
    """One plain dict per provider, in catalog order, with the columns tables show."""
    rows = []
    for h in health.values():
        rows.append({
            "provider": h.provider,
            "status": h.status,
            "enabled": h.enabled,
            "connected": {True: "yes", False: "no", None: "—"}[h.connected],
            "model": h.model_id or "",
            "latency_ms": h.latency_ms,
            "base_url": h.base_url or "",
            "error": h.error or "",
        })
    return rows


def frame(rows: list[dict[str, Any]], columns: list[str] | None = None) -> "pd.DataFrame":
    import pandas as pd

    return pd.DataFrame(rows, columns=columns)


def health_frame(health: dict[str, ProviderHealth]) -> "pd.DataFrame":
    """The health table as a DataFrame indexed by provider."""
    return frame(health_rows(health), HEALTH_COLUMNS).set_index("provider")


def to_text(df: "pd.DataFrame") -> str:
    """A plain-text rendering for terminals (no truncation of columns)."""
    import pandas as pd

    with pd.option_context("display.max_columns", None, "display.width", 200, "display.max_colwidth", 80):
        return df.to_string()
