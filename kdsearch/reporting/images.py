"""Static images of figures (PNG, SVG) through kaleido, an optional extra."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import plotly.graph_objects as go


def image_exporter_available() -> bool:
    """plotly writes static images through kaleido, an optional package."""
    return importlib.util.find_spec("kaleido") is not None


def export_images(figures: dict[str, go.Figure], folder: Path, fmt: str = "png") -> tuple[list[Path], str]:
    """Write each figure as PNG or SVG when an exporter (kaleido) is installed; else say how to get one.

    kaleido drives a browser, whose first export in a process can fail (e.g. "ReferenceError:
    kaleido_scopes is not defined" while its page is still loading): a failed export is tried once
    more, and one that fails again becomes one readable line, never the browser's raw error dump.
    """
    if not image_exporter_available():
        return [], "static images need the kaleido package (pip install kaleido): skipped"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in figures.items():
        path = folder / f"{name}.{fmt}"
        for attempt in (1, 2):
            try:
                fig.write_image(str(path), format=fmt, width=1100, height=fig.layout.height or 480)
                break
            except Exception as exc:  # kaleido present but unable to run (no Chrome, wrong version, a hiccup)
                if attempt == 2:
                    return written, f"static image export failed: {export_error(exc)}"
        written.append(path)
    return written, ""


def export_error(exc: BaseException, limit: int = 160) -> str:
    """One readable line from an exporter's error, which may be a multi-line JSON dump of a browser
    error: its first 'SomethingError: message' when it holds one, else its first line, shortened."""
    text = str(exc).strip() or type(exc).__name__
    found = re.search(r"\b([A-Z][A-Za-z]*(?:Error|Exception)): ([^\n\"\\]+)", text)
    line = f"{found.group(1)}: {found.group(2).strip()}" if found else text.splitlines()[0].strip()
    line = " ".join(line.split())
    return line if len(line) <= limit else line[:limit - 3].rstrip() + "..."
