"""Plain text inside the page's Markdown: users' file names and engine messages shown as written."""

from __future__ import annotations

import re


def md(text: str) -> str:
    """Plain text for st.markdown/st.error: file names and messages must not turn into formatting."""
    return re.sub(r"([\\`*_\[\]$~#<>|])", r"\\\1", text)


def one_line(e: BaseException) -> str:
    """An unexpected failure in one line ('Type: first line of its message'), for a message box."""
    reason = (str(e).strip() or "no reason given").splitlines()[0]
    return f"{type(e).__name__}: {reason}"
