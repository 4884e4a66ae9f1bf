"""Charts drawn on the server as inline SVG: no chart library, nothing fetched by the browser."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

from shelfguard.console.views import HistoryRow

_COLORS = {"promote": "#1a7f37", "rollback": "#9a6700"}


def alias_timeline(rows: Sequence[HistoryRow]) -> Markup:
    """The champion's versions left to right, oldest first: green promotions, amber
    rollbacks, the current version ringed; each dot names its version and model."""
    moves = list(reversed(rows))
    if not moves:
        return Markup("")
    step, left, width = 120, 40, 80 + 120 * max(len(moves) - 1, 0)
    parts = [
        f'<svg class="timeline" role="img" width="{width}" height="90" '
        f'viewBox="0 0 {width} 90" xmlns="http://www.w3.org/2000/svg">',
        f"<title>champion versions {escape(str(moves[0].move.version))} to "
        f"{escape(str(moves[-1].move.version))}</title>",
        f'<line x1="{left}" y1="35" x2="{left + step * (len(moves) - 1)}" y2="35" '
        'stroke="#8c959f" stroke-width="2"/>',
    ]
    for i, row in enumerate(moves):
        x = left + step * i
        color = _COLORS.get(row.move.action, "#57606a")
        if row.is_current:
            parts.append(
                f'<circle cx="{x}" cy="35" r="13" fill="none" stroke="#0969da" stroke-width="3"/>'
            )
        parts.append(f'<circle cx="{x}" cy="35" r="8" fill="{color}"/>')
        parts.append(
            f'<text x="{x}" y="15" text-anchor="middle" font-size="12">'
            f"v{row.move.version} {escape(row.move.action)}</text>"
        )
        parts.append(
            f'<text x="{x}" y="65" text-anchor="middle" font-size="11" '
            f'font-family="monospace">{escape(row.model_sha256[:10])}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(counts: Sequence[tuple[str, int]], *, title: str) -> Markup:
    """Horizontal bars, one per (label, count), scaled to the largest count."""
    if not counts:
        return Markup("")
    most = max(count for _, count in counts) or 1
    height = 24 * len(counts) + 8
    parts = [
        f'<svg class="bars" role="img" width="420" height="{height}" '
        f'viewBox="0 0 420 {height}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for i, (label, count) in enumerate(counts):
        y = 4 + 24 * i
        length = int(260 * count / most)
        parts.append(
            f'<text x="0" y="{y + 14}" font-size="12">{escape(label)}</text>'
            f'<rect x="110" y="{y}" width="{max(length, 1)}" height="18" fill="#0969da"/>'
            f'<text x="{116 + length}" y="{y + 14}" font-size="12">{count}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
