"""The README's building blocks, shared by every section that writes its own part of it."""

from __future__ import annotations

import pandas as pd

from usdh.report.figures import display_name

__all__ = ["protocol_title", "section"]


def section(heading: str, table: pd.DataFrame, intro: str | None = None) -> list[str]:
    """A README section: heading, an optional paragraph, the table in Markdown."""
    text = [intro, ""] if intro is not None else []
    return [heading, "", *text, table.to_markdown(index=False, disable_numparse=True), ""]


def protocol_title(df: pd.DataFrame, protocol: str) -> str:
    """A protocol as a heading names it: the reader's description, then its name."""
    return f"{display_name(df[df['protocol'] == protocol])} (protocol `{protocol}`)"
