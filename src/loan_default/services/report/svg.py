"""Three small inline-SVG charts (lines over categories, x-y curves, grouped bars) as strings.

Every piece of text goes through `esc` (model versions and feature names come from the store
and the registry). No script and no external reference: the page renders offline, as is.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

WIDTH: Final = 720
HEIGHT: Final = 340
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 32, 60, 56
PALETTE: Final = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")

Series = tuple[str, Sequence[float | None]]
"""A name and y values (None: no value there, the line breaks)."""


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _fmt(v: float) -> str:
    return f"{v:.1f}"


def nice_max(value: float) -> float:
    """The smallest 1/2/2.5/5 x 10^k at or above `value` (an axis top)."""
    if not math.isfinite(value) or value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return float(next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= value * (1 - 1e-12)))


@dataclass(frozen=True)
class _Frame:
    x_max: float
    y_max: float
    x_min: float = 0.0

    def x(self, v: float) -> float:
        span = (self.x_max - self.x_min) or 1.0
        return _LEFT + (v - self.x_min) / span * (WIDTH - _LEFT - _RIGHT)

    def y(self, v: float) -> float:
        return HEIGHT - _BOTTOM - v / self.y_max * (HEIGHT - _TOP - _BOTTOM)


def _open(title: str) -> list[str]:
    return [
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{esc(title)}"><title>{esc(title)}</title>',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>',
    ]


def _axes(frame: _Frame, *, x_label: str, y_label: str, y_percent: bool) -> list[str]:
    out = []
    for i in range(6):
        v = frame.y_max * i / 5
        y = frame.y(v)
        text = f"{v:.0%}" if y_percent and frame.y_max >= 0.05 else f"{v:.3g}"
        if y_percent and frame.y_max < 0.05:
            text = f"{v:.1%}"
        out.append(
            f'<line x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{_fmt(y)}" y2="{_fmt(y)}" '
            f'stroke="#e5e5e5"/><text x="{_LEFT - 6}" y="{_fmt(y + 4)}" '
            f'text-anchor="end" class="tick">{esc(text)}</text>'
        )
    base = HEIGHT - _BOTTOM
    out.append(
        f'<line x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{base}" y2="{base}" stroke="#333"/>'
        f'<line x1="{_LEFT}" x2="{_LEFT}" y1="{_TOP}" y2="{base}" stroke="#333"/>'
        f'<text x="{(WIDTH + _LEFT) / 2}" y="{HEIGHT - 8}" text-anchor="middle" '
        f'class="label">{esc(x_label)}</text>'
        f'<text transform="translate(14 {(HEIGHT - _BOTTOM + _TOP) / 2}) rotate(-90)" '
        f'text-anchor="middle" class="label">{esc(y_label)}</text>'
    )
    return out


def _x_ticks(frame: _Frame, ticks: Sequence[tuple[float, str]]) -> list[str]:
    y = HEIGHT - _BOTTOM
    return [
        f'<line x1="{_fmt(frame.x(v))}" x2="{_fmt(frame.x(v))}" y1="{y}" y2="{y + 4}" '
        f'stroke="#333"/><text x="{_fmt(frame.x(v))}" y="{y + 18}" text-anchor="middle" '
        f'class="tick">{esc(text)}</text>'
        for v, text in ticks
    ]


def _legend(names: Sequence[str], *, dashed_last: bool = False) -> list[str]:
    """Swatches above the plot; with `dashed_last` the last entry is the grey dashed guide."""
    out, x, y = [], float(_LEFT), 14
    for i, name in enumerate(names):
        width = 34 + 7.2 * len(name)
        if x > _LEFT and x + width > WIDTH - _RIGHT:  # wrap to a second row
            x, y = float(_LEFT), y + 16
        guide = dashed_last and i == len(names) - 1
        stroke = (
            '"#888" stroke-width="2" stroke-dasharray="6 4"'
            if guide
            else (f'"{PALETTE[i % len(PALETTE)]}" stroke-width="3"')
        )
        out.append(
            f'<line x1="{_fmt(x)}" x2="{_fmt(x + 18)}" y1="{y}" y2="{y}" stroke={stroke}/>'
            f'<text x="{_fmt(x + 22)}" y="{y + 4}" class="legend">{esc(name)}</text>'
        )
        x += width
    return out


def _note(note: str | None) -> list[str]:
    if not note:
        return []
    x, y = WIDTH - _RIGHT, _TOP - 8
    return [f'<text x="{x}" y="{y}" text-anchor="end" class="note">{esc(note)}</text>']


def _path(frame: _Frame, xs: Sequence[float], ys: Sequence[float | None], color: str) -> str:
    """A polyline broken where y is None, with a dot at every point."""
    parts, dots, pen = [], [], "M"
    for x, y in zip(xs, ys, strict=True):
        if y is None or not math.isfinite(y):
            pen = "M"
            continue
        px, py = _fmt(frame.x(x)), _fmt(frame.y(y))
        parts.append(f"{pen}{px} {py}")
        dots.append(f'<circle cx="{px}" cy="{py}" r="2.5" fill="{color}"/>')
        pen = "L"
    line = f'<path d="{" ".join(parts)}" fill="none" stroke="{color}" stroke-width="2"/>'
    return line + ("".join(dots) if len(dots) <= 60 else "")


def _top(values: Sequence[Sequence[float | None]], floor: float = 0.0) -> float:
    finite = [v for vs in values for v in vs if v is not None and math.isfinite(v)]
    return nice_max(max([floor, *finite]) * 1.05)


def line_chart(
    *,
    title: str,
    categories: Sequence[str],
    series: Sequence[Series],
    y_label: str,
    hline: tuple[str, float] | None = None,
    y_percent: bool = False,
    note: str | None = None,
) -> str:
    """One line per series over evenly spaced categories (months); an optional dashed level."""
    frame = _Frame(x_max=max(len(categories) - 1, 1), y_max=_top([s[1] for s in series], 1e-9))
    if hline is not None:
        frame = _Frame(x_max=frame.x_max, y_max=max(frame.y_max, nice_max(hline[1] * 1.2)))
    step = max(1, math.ceil(len(categories) / 12))
    out = _open(title) + _axes(frame, x_label="month (UTC)", y_label=y_label, y_percent=y_percent)
    out += _x_ticks(frame, [(i, c) for i, c in enumerate(categories) if i % step == 0])
    if hline is not None:
        y = _fmt(frame.y(hline[1]))
        out.append(
            f'<line x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y}" y2="{y}" stroke="#888" '
            f'stroke-dasharray="6 4"/><text x="{WIDTH - _RIGHT - 4}" y="{float(y) - 4:.1f}" '
            f'text-anchor="end" class="tick">{esc(hline[0])}</text>'
        )
    xs = list(range(len(categories)))
    for i, (_, ys) in enumerate(series):
        out.append(_path(frame, xs, ys, PALETTE[i % len(PALETTE)]))
    out += _legend([s[0] for s in series]) + _note(note)
    return "".join(out) + "</svg>"


def xy_chart(
    *,
    title: str,
    curves: Sequence[tuple[str, Sequence[float], Sequence[float | None]]],
    x_label: str,
    y_label: str,
    diagonal: str | None = None,
    x_max: float = 1.0,
    y_max: float = 1.0,
    note: str | None = None,
) -> str:
    """Curves on [0, x_max] x [0, y_max], with an optional dashed diagonal named `diagonal`."""
    frame = _Frame(x_max=x_max, y_max=y_max)
    out = _open(title) + _axes(frame, x_label=x_label, y_label=y_label, y_percent=False)
    out += _x_ticks(frame, [(x_max * i / 5, f"{x_max * i / 5:.3g}") for i in range(6)])
    if diagonal is not None:
        top = min(x_max, y_max)
        out.append(
            f'<line x1="{_fmt(frame.x(0))}" y1="{_fmt(frame.y(0))}" x2="{_fmt(frame.x(top))}" '
            f'y2="{_fmt(frame.y(top))}" stroke="#888" stroke-dasharray="6 4"/>'
        )
    for i, (_, xs, ys) in enumerate(curves):
        out.append(_path(frame, xs, ys, PALETTE[i % len(PALETTE)]))
    names = [c[0] for c in curves] + ([diagonal] if diagonal else [])
    out += _legend(names, dashed_last=diagonal is not None) + _note(note)
    return "".join(out) + "</svg>"


def bar_chart(
    *,
    title: str,
    edges: Sequence[float],
    series: Sequence[Series],
    x_label: str,
    y_label: str,
    note: str | None = None,
) -> str:
    """Grouped bars: one group per bin [edges[i], edges[i + 1]), one bar per series."""
    frame = _Frame(x_min=edges[0], x_max=edges[-1], y_max=_top([s[1] for s in series], 1e-9))
    out = _open(title) + _axes(frame, x_label=x_label, y_label=y_label, y_percent=True)
    out += _x_ticks(frame, [(e, f"{e:.2g}") for i, e in enumerate(edges) if i % 2 == 0])
    k = max(len(series), 1)
    for i, (_, ys) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        for b, v in enumerate(ys):
            if v is None or v <= 0:
                continue
            x0, x1 = frame.x(edges[b]), frame.x(edges[b + 1])
            w = (x1 - x0 - 2) / k
            out.append(
                f'<rect x="{_fmt(x0 + 1 + i * w)}" y="{_fmt(frame.y(v))}" width="{_fmt(w)}" '
                f'height="{_fmt(frame.y(0) - frame.y(v))}" fill="{color}" fill-opacity="0.8"/>'
            )
    out += _legend([s[0] for s in series]) + _note(note)
    return "".join(out) + "</svg>"
