"""A line chart in the terminal, drawn with Braille dots (2 x 4 per character).

Why not plotext: its 6.x line rewrote the API of 5.x (no ``plot``/``build`` at the top
level), so depending on it meant an abandoned major version or a new API; curves of a
few series over iterations need only the dots, two axes and a legend (this file).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from rich.text import Text

#: Bit of the Braille dot at (x, y) in a character cell (x 0..1, y 0..3 from the top).
_DOTS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
COLORS = ("bright_blue", "bright_red", "green", "magenta", "yellow", "cyan")


def _label(v: float) -> str:
    return f"{v:.4g}"


def line_chart(
    series: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    width: int = 60,
    height: int = 12,
    title: str = "",
    x_label: str = "iteration",
) -> Text:
    """Draw ``[(label, [(x, y), ...]), ...]`` as lines; later series are drawn over
    earlier ones. ``width`` and ``height`` are the plot area in characters."""
    pts = [(x, y) for _, s in series for x, y in s if math.isfinite(y)]
    out = Text()
    if title:
        out.append(title + "\n", style="bold")
    if not pts:
        return out.append("(no values)\n", style="dim")
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    if x1 == x0:
        x1 = x0 + 1
    w, h = width * 2, height * 4
    bits = [[0] * width for _ in range(height)]
    color: list[list[str | None]] = [[None] * width for _ in range(height)]

    def dot(px: int, py: int, style: str) -> None:
        cx, cy = px // 2, py // 4
        bits[cy][cx] |= _DOTS[px % 2][py % 4]
        color[cy][cx] = style

    for i, (_, s) in enumerate(series):
        style = COLORS[i % len(COLORS)]
        pix = [
            (round((x - x0) / (x1 - x0) * (w - 1)), round((y1 - y) / (y1 - y0) * (h - 1)))
            for x, y in s
            if math.isfinite(y)
        ]
        for (ax, ay), (bx, by) in itertools.pairwise(pix):
            steps = max(abs(bx - ax), abs(by - ay), 1)
            for k in range(steps + 1):
                dot(ax + (bx - ax) * k // steps, ay + (by - ay) * k // steps, style)
        if len(pix) == 1:
            dot(*pix[0], style)
    labels = {0: _label(y1), height // 2: _label((y0 + y1) / 2), height - 1: _label(y0)}
    pad = max(len(v) for v in labels.values())
    for row in range(height):
        out.append(f"{labels.get(row, ''):>{pad}} ┤", style="dim")
        for col in range(width):
            b = bits[row][col]
            out.append(chr(0x2800 + b) if b else " ", style=color[row][col] or "")
        out.append("\n")
    left, right = _label(x0), _label(x1)
    out.append(" " * pad + " └" + "─" * width + "\n", style="dim")
    gap = max(1, width - len(left) - len(right))
    out.append(" " * (pad + 2) + left + " " * gap + right + f"  {x_label}\n", style="dim")
    out.append(" " * (pad + 2))
    for i, (label, _) in enumerate(series):
        out.append("⣿ ", style=COLORS[i % len(COLORS)])
        out.append(label + "   ")
    out.append("\n")
    return out
