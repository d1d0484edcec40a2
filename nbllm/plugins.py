"""Finding the installed packages that add providers (the `nbllm.providers` entry-point group).

Why a look before `importlib.metadata`: importing it and listing every distribution's entry
points costs 20–40 ms on this machine (~175 distributions; email parsing included), which was
a sixth of the first `%llm_providers --status`. Almost always no package declares the group,
so a byte search of each `entry_points.txt` on `sys.path` (~3 ms) decides whether the real
lookup is needed; when one does, or when a non-path finder could supply distributions the scan
cannot see, `importlib.metadata` does the lookup as before (so its rules, not ours, decide).
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["provider_entry_points", "GROUP"]

GROUP = "nbllm.providers"


def provider_entry_points() -> list[Any]:
    """The entry points of `GROUP` (empty when no installed distribution declares it)."""
    if not _may_declare(GROUP):
        return []
    from importlib.metadata import entry_points

    return list(entry_points(group=GROUP))


def _may_declare(group: str) -> bool:
    """Whether some distribution may declare `group`: one on `sys.path` names it, or a finder other
    than the standard path finder can supply distributions."""
    if any(hasattr(f, "find_distributions") and not _is_path_finder(f) for f in sys.meta_path):
        return True
    needle = group.encode()
    for folder in sys.path:
        try:
            entries = os.scandir(folder or ".")
        except OSError:  # a missing folder, or a zip file (whose distributions are looked up for real)
            if os.path.isfile(folder):
                return True
            continue
        with entries:
            for entry in entries:
                if entry.name.endswith((".dist-info", ".egg-info")) and _names(entry.path, needle):
                    return True
    return False


def _names(folder: str, needle: bytes) -> bool:
    try:
        with open(os.path.join(folder, "entry_points.txt"), "rb") as file:
            return needle in file.read()
    except OSError:  # (most distributions have no entry points; an .egg-info may be a file)
        return False


def _is_path_finder(finder: object) -> bool:
    from importlib.machinery import PathFinder

    return finder is PathFinder
