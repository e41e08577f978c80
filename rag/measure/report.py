"""One self-contained HTML page for `rag compare`: inline SVG charts, tables, the settings.

Nothing is loaded from anywhere: no scripts, fonts, images or stylesheets by URL, so the page
opens offline and can be mailed around. Charts are plain SVG drawn here.
"""

from __future__ import annotations

import html
import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

COLORS = {"slm": "#2f7ed8", "llm": "#d9822b", "app": "#6b8e23"}
SERIES_COLORS = ("#2f7ed8", "#d9822b", "#8e6bbf", "#3a9d5d")
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1100px;
color:#1d2330;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #dde;
padding-bottom:4px}.note{color:#5a6272;font-size:13px}.warn{background:#fff6e0;border:1px solid #f0d9a0;
padding:6px 10px;border-radius:4px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}th,td{border:1px solid #dde;padding:4px 8px;
text-align:right}th:first-child,td:first-child{text-align:left}thead th{background:#f3f5f9}
.charts{display:flex;flex-wrap:wrap;gap:16px}figure{margin:0}figcaption{font-size:12px;color:#5a6272}
svg.chart{background:#fbfcfe;border:1px solid #e4e7ee;border-radius:4px}
svg text{font:11px system-ui,sans-serif;fill:#1d2330}
pre{background:#f6f7f9;padding:10px;overflow:auto;font-size:12px}
details{margin:6px 0}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}{suffix}"
    return _e(value)


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.0f}%"


def _nice_max(value: float) -> float:
    """A round axis maximum at or above ``value``."""
    if value <= 0:
        return 1.0
    step = 10.0 ** (len(str(int(value))) - 1)
    for m in (1, 2, 2.5, 5, 10):
        if m * step >= value:
            return m * step
    return 10 * step


def strip_chart(title: str, rows: Sequence[tuple[str, str, Sequence[float]]], unit: str) -> str:
    """Each sample as a dot on a horizontal axis, one lane per (label, color) row; a bar at the median."""
    width, lane, left, top = 520, 46, 150, 30
    height = top + lane * max(1, len(rows)) + 34
    values = [v for _, _, vs in rows for v in vs]
    vmax = _nice_max(max(values, default=1.0))
    scale = (width - left - 20) / vmax
    out = [
        f'<svg class="chart" role="img" aria-label="{_e(title)}" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}">',
        f'<text x="10" y="18" font-weight="600">{_e(title)}</text>',
    ]
    for i in range(5):
        x = left + i * (width - left - 20) / 4
        out.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{height - 30}" stroke="#e4e7ee"/>'
            f'<text x="{x:.1f}" y="{height - 14}" text-anchor="middle">{vmax * i / 4:,.0f}</text>'
        )
    out.append(f'<text x="{width - 10}" y="18" text-anchor="end" class="note">{_e(unit)}</text>')
    for n, (label, color, vs) in enumerate(rows):
        y = top + n * lane + lane / 2
        out.append(f'<text x="10" y="{y + 4:.1f}">{_e(label)}</text>')
        if not vs:
            out.append(f'<text x="{left}" y="{y + 4:.1f}" class="note">no samples</text>')
            continue
        for k, v in enumerate(vs):
            jitter = ((k * 7) % 5 - 2) * 3
            out.append(
                f'<circle cx="{left + v * scale:.1f}" cy="{y + jitter:.1f}" r="4" fill="{color}"'
                f' fill-opacity="0.55"><title>{v:,.0f} {_e(unit)}</title></circle>'
            )
        med = statistics.median(vs)
        x = left + med * scale
        out.append(
            f'<line x1="{x:.1f}" y1="{y - 14:.1f}" x2="{x:.1f}" y2="{y + 14:.1f}" stroke="#1d2330"'
            f' stroke-width="2"><title>median {med:,.0f} {_e(unit)}</title></line>'
        )
    out.append("</svg>")
    return "".join(out)


def bar_chart(
    title: str,
    groups: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    unit: str,
    vmax: float | None = None,
) -> str:
    """Vertical grouped bars: one group per label, one bar per series; None draws "n/a"."""
    width, height, left, top, bottom = 520, 260, 48, 30, 56
    values = [v for _, vs in series for v in vs if v is not None]
    top_value = vmax or _nice_max(max(values, default=1.0))
    plot_h = height - top - bottom
    group_w = (width - left - 10) / max(1, len(groups))
    bar_w = min(36.0, (group_w - 16) / max(1, len(series)))
    out = [
        f'<svg class="chart" role="img" aria-label="{_e(title)}" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}">',
        f'<text x="10" y="18" font-weight="600">{_e(title)}</text>',
    ]
    for i in range(5):
        y = top + plot_h - i * plot_h / 4
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="#e4e7ee"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{top_value * i / 4:g}</text>'
        )
    out.append(f'<text x="{width - 10}" y="18" text-anchor="end" class="note">{_e(unit)}</text>')
    for g, label in enumerate(groups):
        gx = left + g * group_w + (group_w - bar_w * len(series)) / 2
        for s, (name, vs) in enumerate(series):
            v = vs[g] if g < len(vs) else None
            x = gx + s * bar_w
            color = SERIES_COLORS[s % len(SERIES_COLORS)]
            if v is None:
                out.append(
                    f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h - 4}" text-anchor="middle"'
                    f' font-size="9" transform="rotate(-90 {x + bar_w / 2:.1f} {top + plot_h - 4})"'
                    f">n/a</text>"
                )
                continue
            h = max(1.0, min(v, top_value) / top_value * plot_h)
            out.append(
                f'<rect class="bar" x="{x + 1:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w - 2:.1f}"'
                f' height="{h:.1f}" fill="{color}"><title>{_e(name)}: {v:,.2f} {_e(unit)}</title></rect>'
            )
        out.append(
            f'<text x="{left + g * group_w + group_w / 2:.1f}" y="{top + plot_h + 16}"'
            f' text-anchor="middle">{_e(label)}</text>'
        )
    lx = left
    for s, (name, _) in enumerate(series):
        color = SERIES_COLORS[s % len(SERIES_COLORS)]
        out.append(
            f'<rect x="{lx}" y="{height - 20}" width="10" height="10" fill="{color}"/>'
            f'<text x="{lx + 14}" y="{height - 11}">{_e(name)}</text>'
        )
        lx += 24 + 7 * len(name)
    out.append("</svg>")
    return "".join(out)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


SUMMARY_HEAD = (
    "model", "first token p50", "total p50", "tokens/s", "RSS after load", "RSS peak",
    "file", "cold start", "contains gold", "F1", "abstains", "rubric coh/fact/conc",
)  # fmt: skip


def _rubric_cell(rubric: Mapping[str, Any] | None) -> str:
    if not rubric:
        return "–"
    scores = "/".join(_num(rubric.get(c), 1) for c in ("coherence", "factuality", "conciseness"))
    return f"{scores} (n={rubric.get('judged', 0)}, missing {rubric.get('missing', 0)})"


def summary_rows(models: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """The headline table, one row per model (also printed by the CLI and put in the README)."""
    return [
        [
            _e(m["model"]),
            _num(m.get("ttft_ms_p50"), 0, " ms"),
            _num(m.get("total_ms_p50"), 0, " ms"),
            _num(m.get("tokens_per_s"), 1),
            _num(m.get("rss_mb"), 0, " MB") if m.get("rss_mb") is not None else "not measurable",
            _num(m.get("rss_peak_mb"), 0, " MB") if m.get("rss_peak_mb") is not None else "–",
            _num(m.get("file_mb"), 0, " MB"),
            _num(m.get("cold_start_ms"), 0, " ms"),
            _pct(m.get("contains_gold")),
            _num(m.get("f1"), 2),
            _pct(m.get("abstain_impossible")),
            _rubric_cell(m.get("rubric")),
        ]
        for m in models
    ]


def _money(value: float, currency: str) -> str:
    digits = 6 if 0 < abs(value) < 0.01 else 4 if abs(value) < 10 else 2
    return f"{value:,.{digits}f} {_e(currency)}"


def render(result: Mapping[str, Any]) -> str:
    """The whole page for a `run_comparison` result."""
    models: list[Mapping[str, Any]] = result["models"]
    run: Mapping[str, Any] = result["run"]
    names = [str(m["model"]) for m in models]
    colors = [COLORS.get(str(m.get("role")), "#888") for m in models]
    ttft = strip_chart(
        "Time to first token (QA questions)",
        [(n, c, m["samples"]["ttft_ms"]) for n, c, m in zip(names, colors, models, strict=True)],
        "ms",
    )
    total = strip_chart(
        "Total answer time (QA questions)",
        [(n, c, m["samples"]["total_ms"]) for n, c, m in zip(names, colors, models, strict=True)],
        "ms",
    )
    memory = bar_chart(
        "Memory per model server (and this app)",
        [*names, "app + index"],
        [
            ("GGUF file", [m.get("file_mb") for m in models] + [None]),
            ("RSS after load", [m.get("rss_mb") for m in models] + [run.get("app_rss_mb")]),
            ("RSS peak (sampled)", [m.get("rss_peak_mb") for m in models] + [None]),
        ],
        "MB",
    )
    rubric = bar_chart(
        "Rubric (judge: the large model)",
        ["coherence", "factuality", "conciseness"],
        [
            (
                n,
                [
                    (m.get("rubric") or {}).get(c)
                    for c in ("coherence", "factuality", "conciseness")
                ],
            )
            for n, m in zip(names, models, strict=True)
        ],
        "score 1-5",
        vmax=5,
    )
    gold = bar_chart(
        "Gold answers (eval/docs_qa)",
        ["contains gold", "token F1", "abstains when unanswerable"],
        [
            (
                n,
                [
                    None if m.get(k) is None else 100 * float(m[k])
                    for k in ("contains_gold", "f1", "abstain_impossible")
                ],
            )
            for n, m in zip(names, models, strict=True)
        ],
        "%",
        vmax=100,
    )
    cost_rows = [
        [
            _e(c["profile"]),
            _e(c["strategy"]),
            _money(c["per_answer"], c["currency"]),
            _money(c["per_1k_questions"], c["currency"]),
            _money(c["per_month"], c["currency"]),
        ]
        for c in run["costs"]
    ]
    memory_notes = "".join(
        f"<li>{_e(m['model'])}: {_e(m['memory_note'])}</li>" for m in models if m.get("memory_note")
    )
    cascade = run.get("cascade") or {}
    judge = run.get("judge")
    judgements = "".join(
        f"<details><summary>{_e(m['model'])}: {len(m.get('judgements', []))} judgements</summary>"
        + _table(
            ["question", "coh/fact/conc", "judge's reason"],
            [
                [
                    _e(j["id"]),
                    "/".join(str(v) for v in j["scores"].values()) if j["scores"] else "missing",
                    _e(j["reason"]),
                ]
                for j in m.get("judgements", [])
            ],
        )
        + "</details>"
        for m in models
    )
    settings = json.dumps(run["settings"], indent=1, ensure_ascii=False)
    tokens = run["tokens"]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        f"<title>Small vs large: {_e(' vs '.join(names))}</title><style>{CSS}</style></head><body>",
        f"<h1>Small vs large: {_e(' vs '.join(names))}</h1>",
        f"<p class='note'>{_e(run['settings']['date'])} · "
        f"{_e(run['settings']['qa']['questions'])} questions from {_e(run['settings']['qa']['data'])}"
        f" (split {_e(run['settings']['qa']['split'])}) · temperature 0, seed 1234</p>",
        f"<p class='warn'>{_e(run['busy_machine_note'])} "
        f"(load average {_e(run['settings']['machine']['load_avg_1m'])} on "
        f"{_e(run['settings']['machine']['cpu_cores'])} cores at the end).</p>",
        "<h2>Summary</h2>",
        _table(SUMMARY_HEAD, summary_rows(models)),
        "<h2>Latency</h2><div class='charts'>",
        f"<figure>{ttft}<figcaption>Each dot is one answer; the bar is the median.</figcaption></figure>",
        f"<figure>{total}</figure></div>",
        "<p class='note'>Warm short prompt, median first token: "
        + ", ".join(f"{_e(m['model'])} {_num(m.get('warm_ttft_ms_p50'), 0, ' ms')}" for m in models)
        + (
            ". Cold start (server process start to first token): "
            + ", ".join(
                f"{_e(m['model'])} {_num(m.get('cold_start_ms'), 0, ' ms')}" for m in models
            )
            if any("cold_start_ms" in m for m in models)
            else ". Cold start not measured (run with --cold)"
        )
        + ".</p>",
        "<h2>Memory</h2><div class='charts'>",
        f"<figure>{memory}<figcaption>RSS = resident memory (VmRSS) of the llama.cpp server "
        "process; peak sampled every 100 ms while answering.</figcaption></figure></div>",
        f"<p class='note'>App: {_num(run.get('app_rss_mb'), 0, ' MB')} — {_e(run['app_note'])}.</p>",
        f"<ul class='note'>{memory_notes}</ul>" if memory_notes else "",
        "<h2>Quality</h2><div class='charts'>",
        f"<figure>{rubric}</figure><figure>{gold}</figure></div>",
        f"<p class='note'>Judge: {_e(judge['model'])}. Bias: {_e(judge['bias'])}</p>"
        if judge
        else "<p class='note'>Rubric not judged (--no-judge).</p>",
        judgements,
        "<p class='note'>Cascade (mode auto) on the same questions: contains gold "
        f"{_pct(cascade.get('contains_gold'))}, F1 {_num(cascade.get('f1'), 2)}, abstains "
        f"{_pct(cascade.get('abstain_impossible'))}, escalation rate "
        f"{_pct(cascade.get('escalation_rate'))}.</p>"
        if cascade
        else "",
        "<h2>Cost simulation</h2>",
        f"<p class='note'>Measured tokens per answer: small {tokens['small']['prompt']:.0f} in / "
        f"{tokens['small']['completion']:.0f} out, large {tokens['large']['prompt']:.0f} in / "
        f"{tokens['large']['completion']:.0f} out. Cascade = small + escalation rate × large, at "
        f"{_pct(run['escalation_rate'])} ({_e(run['escalation_rate_source'])}). Month = "
        f"{_e(run['volume_per_day'])} questions/day × {_e(run['days_per_month'])} days. "
        "Prices are hypothetical.</p>",
        _table(
            ["profile", "strategy", "per answer", "per 1,000 questions", "per month"], cost_rows
        ),
        "<ul class='note'>"
        + "".join(f"<li>{_e(k)}: {_e(v)}</li>" for k, v in run["profile_notes"].items() if v)
        + "</ul>",
        "<h2>Settings and versions</h2>",
        "<p class='note'>Model files: "
        + ", ".join(
            f"{_e(m.get('file'))} (sha256 {_e(m.get('sha256'))}…)" for m in models if m.get("file")
        )
        + "</p>",
        f"<pre>{_e(settings)}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report(result: Mapping[str, Any], path: Path) -> Path:
    """Write the page to ``path`` (parents created); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(result), encoding="utf-8")
    return path
