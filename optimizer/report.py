"""A run's result: the recommendation and its self-contained HTML report.

:func:`summarize` picks the best validated candidate and says, with a
paired bootstrap, whether it beats the baseline. :func:`render_html`
draws the whole run as one HTML file that needs nothing else: the chart
is inline SVG drawn here, the style a few inline rules, no scripts and
no external resources, so the report opens offline and can be mailed.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from optimizer.records import Candidate
from optimizer.stats import paired_bootstrap

NO_VALUE = "—"


def _best(candidates: Sequence[Candidate], baseline: Candidate) -> Candidate:
    """The best validated candidate; the incumbent keeps a tie."""
    best, best_score = baseline, baseline.validation_score
    for candidate in candidates:
        score = candidate.validation_score
        if score is not None and (best_score is None or score > best_score):
            best, best_score = candidate, score
    return best


def summarize(
    candidates: Sequence[Candidate], baseline_id: str, *, seed: int
) -> dict[str, Any]:
    """The run's result: the best prompt, and whether to use it.

    Args:
        candidates: Every candidate, in order of creation.
        baseline_id: The best seed on validation.
        seed: Seeds the bootstrap, so the same run gives the same
            interval.

    Returns:
        ``bestId``, ``bestPrompt``, ``bestScore``, ``baselineId``,
        ``baselineScore``, ``comparison`` (see
        :meth:`~optimizer.stats.Comparison.to_doc`), ``recommendation``
        (``"best"`` only when the improvement is significant, else
        ``"baseline"``) and ``message`` saying why in plain words.

    Raises:
        ValueError: ``baseline_id`` is not among the candidates.
    """
    by_id = {candidate.id: candidate for candidate in candidates}
    if baseline_id not in by_id:
        raise ValueError(f"baseline {baseline_id!r} is not a candidate")
    baseline = by_id[baseline_id]
    best = _best(candidates, baseline)
    comparison = paired_bootstrap(
        baseline.validation or {},
        best.validation or {},
        rng=random.Random(seed),
    )
    use_best = best is not baseline and comparison.significant
    if best is baseline:
        message = (
            "No candidate was scored on validation; keep the baseline."
            if baseline.validation_score is None
            else f"No candidate beat the baseline ({baseline.id}, "
            f"{baseline.validation_score:.3f}); keep the baseline."
        )
    elif comparison.low is None or comparison.high is None:
        message = (
            f"Too few examples scored by both {best.id} and the baseline "
            f"to compare (n={comparison.n}); keep the baseline."
        )
    else:
        evidence = (
            f"{comparison.difference:+.3f} ({comparison.confidence:.0%} CI "
            f"{comparison.low:+.3f} to {comparison.high:+.3f}, "
            f"n={comparison.n})"
        )
        message = (
            f"Significant improvement: {evidence}; use {best.id}."
            if use_best
            else f"No significant improvement: {evidence}; keep the baseline."
        )
    return {
        "bestId": best.id,
        "bestPrompt": best.prompt,
        "bestScore": best.validation_score,
        "baselineId": baseline.id,
        "baselineScore": baseline.validation_score,
        "comparison": comparison.to_doc(),
        "recommendation": "best" if use_best else "baseline",
        "message": message,
    }


def _score(value: Any) -> str:
    return NO_VALUE if value is None else f"{value:.3f}"


# The chart's geometry, in SVG user units (pixels at 100% zoom).
WIDTH, HEIGHT = 720, 320
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 28, 44
INSET = 20


def _chart(
    history: Sequence[Mapping[str, Any]], baseline_score: float | None
) -> str:
    """Score per iteration as inline SVG (no xmlns: HTML needs none)."""
    iterations = [int(entry["iteration"]) for entry in history] or [0]
    first, last = min(iterations), max(iterations)
    span = max(last - first, 1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(iteration: float) -> float:
        if first == last:
            return LEFT + plot_w / 2
        # Inset, so the first and last dots clear the axis and the edge.
        inner = plot_w - 2 * INSET
        return LEFT + INSET + (iteration - first) / span * inner

    def y(score: float) -> float:
        return TOP + (1 - min(max(score, 0.0), 1.0)) * plot_h

    out = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        'aria-label="score per iteration">'
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        out.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" '
            f'y1="{y(tick):.1f}" y2="{y(tick):.1f}"/>'
            f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" '
            f'text-anchor="end">{tick:g}</text>'
        )
    step = max(1, -(-span // 15))  # at most ~15 labels on the x axis
    for iteration in range(first, last + 1, step):
        out.append(
            f'<text x="{x(iteration):.1f}" y="{HEIGHT - BOTTOM + 16}" '
            f'text-anchor="middle">{iteration}</text>'
        )
    out.append(
        f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" '
        f'y1="{HEIGHT - BOTTOM}" y2="{HEIGHT - BOTTOM}"/>'
        f'<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" '
        f'y2="{HEIGHT - BOTTOM}"/>'
        f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 8}" '
        'text-anchor="middle">iteration</text>'
        f'<text transform="translate(14 {TOP + plot_h / 2:.1f}) '
        'rotate(-90)" text-anchor="middle">score</text>'
    )
    if baseline_score is not None:
        out.append(
            f'<line class="baseline" x1="{LEFT}" x2="{WIDTH - RIGHT}" '
            f'y1="{y(baseline_score):.1f}" y2="{y(baseline_score):.1f}">'
            f"<title>baseline {baseline_score:.3f}</title></line>"
        )
    # Best so far holds until it improves: a step line, not a slope.
    points: list[str] = []
    held: float | None = None
    for entry in history:
        best = entry.get("bestScore")
        if best is None:
            continue
        px = x(int(entry["iteration"]))
        if held is not None and held != best:
            points.append(f"{px:.1f},{y(held):.1f}")
        points.append(f"{px:.1f},{y(best):.1f}")
        held = best
    if points:
        out.append(f'<polyline class="best" points="{" ".join(points)}"/>')
    for entry in history:
        px = x(int(entry["iteration"]))
        for candidate in entry.get("candidates", []):
            name = escape(str(candidate.get("id")))
            for key, css, label in (
                ("minibatchScore", "minibatch", "minibatch"),
                ("validationScore", "validation", "validation"),
            ):
                value = candidate.get(key)
                if value is not None:
                    out.append(
                        f'<circle class="{css}" cx="{px:.1f}" '
                        f'cy="{y(value):.1f}" r="4"><title>{name} '
                        f"{label} {value:.3f}</title></circle>"
                    )
    legend = (
        ("validation", "validation score"),
        ("minibatch", "minibatch score"),
    )
    for index, (css, label) in enumerate(legend):
        lx = LEFT + 8 + index * 150
        out.append(
            f'<circle class="{css}" cx="{lx}" cy="12" r="4"/>'
            f'<text x="{lx + 8}" y="16">{label}</text>'
        )
    lx = LEFT + 8 + len(legend) * 150
    out.append(
        f'<line class="best" x1="{lx - 6}" x2="{lx + 10}" y1="12" y2="12"/>'
        f'<text x="{lx + 14}" y="16">best so far</text>'
        f'<line class="baseline" x1="{lx + 104}" x2="{lx + 120}" y1="12" '
        f'y2="12"/><text x="{lx + 124}" y="16">baseline</text>'
    )
    out.append("</svg>")
    return "".join(out)


def _prompt(text: str, *, open_: bool = False) -> str:
    return (
        f"<details{' open' if open_ else ''}><summary>prompt "
        f"({len(text)} chars)</summary><pre>{escape(text)}</pre></details>"
    )


def _table(rows: Sequence[tuple[str, str]]) -> str:
    """A two-column table; values are HTML already."""
    body = "".join(
        f"<tr><th>{escape(name)}</th><td>{value}</td></tr>"
        for name, value in rows
    )
    return f'<table class="facts">{body}</table>'


def _summary(summary: Mapping[str, Any], prompt_open: bool) -> str:
    comparison = summary.get("comparison") or {}
    low, high = comparison.get("low"), comparison.get("high")
    interval = (
        NO_VALUE
        if low is None or high is None
        else f"{low:+.3f} to {high:+.3f} "
        f"({comparison.get('confidence', 0.95):.0%})"
    )
    difference = comparison.get("difference")
    css = "best" if summary.get("recommendation") == "best" else "keep"
    facts = _table(
        [
            (
                "best",
                f"{escape(str(summary.get('bestId')))} "
                f"({_score(summary.get('bestScore'))})",
            ),
            (
                "baseline",
                f"{escape(str(summary.get('baselineId')))} "
                f"({_score(summary.get('baselineScore'))})",
            ),
            (
                "paired difference",
                NO_VALUE if difference is None else f"{difference:+.3f}",
            ),
            ("bootstrap interval", interval),
            ("examples paired", str(comparison.get("n", 0))),
            ("examples excluded", str(comparison.get("excluded", 0))),
        ]
    )
    return (
        f'<p class="verdict {css}">{escape(str(summary.get("message")))}'
        f"</p>{facts}<h3>Best prompt</h3>"
        f"{_prompt(str(summary.get('bestPrompt', '')), open_=prompt_open)}"
    )


def _spending(spending: Mapping[str, Any]) -> str:
    def count(key: str) -> str:
        value = spending.get(key)
        return NO_VALUE if value is None else f"{int(value):,}"

    cost = spending.get("cost")
    return _table(
        [
            ("model calls", count("calls")),
            ("cost", NO_VALUE if cost is None else f"${cost:,.4f}"),
            ("input tokens", count("inputTokens")),
            ("output tokens", count("outputTokens")),
            ("discarded proposals", count("discardedProposals")),
        ]
    )


def _candidate_row(candidate: Candidate, marks: Mapping[str, str]) -> str:
    name = escape(candidate.id)
    parents = ", ".join(
        f'<a href="#cand-{escape(p)}">{escape(p)}</a>'
        for p in candidate.parents
    )
    screens = "<br>".join(
        f"it {escape(str(m.get('iteration')))}: {_score(m.get('score'))}"
        f" (parent {_score(m.get('parentScore'))})"
        for m in candidate.minibatch
    )
    mark = marks.get(candidate.id, "")
    badge = f' <span class="badge">{escape(mark)}</span>' if mark else ""
    row_class = ' class="marked"' if mark else ""
    return (
        f'<tr id="cand-{name}"{row_class}>'
        f"<td>{name}{badge}</td><td>{candidate.iteration}</td>"
        f"<td>{parents or NO_VALUE}</td>"
        f"<td>{escape(candidate.rationale or NO_VALUE)}</td>"
        f"<td>{screens or NO_VALUE}</td>"
        f"<td>{_score(candidate.validation_score)}</td>"
        f"<td>{candidate.validation_errors or ''}</td>"
        f"<td>{_prompt(candidate.prompt)}</td></tr>"
    )


_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:72rem;
padding:0 1rem;color:#1f2328}
h1{font-size:1.5rem}h2{margin-top:2rem;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse}th,td{padding:.3rem .6rem;text-align:left;
vertical-align:top;border-bottom:1px solid #eaeef2}
.facts th{font-weight:600;color:#57606a}
pre{white-space:pre-wrap;background:#f6f8fa;padding:.6rem;margin:.3rem 0;
max-width:40rem}
.verdict{padding:.6rem .8rem;border-radius:6px;font-weight:600}
.verdict.best{background:#dafbe1}.verdict.keep{background:#fff8c5}
.marked{background:#f6f8fa}.badge{font-size:.75rem;background:#ddf4ff;
border-radius:4px;padding:0 .3rem}
.chart{width:100%;max-width:720px;font-size:12px}
.chart text{fill:#57606a}.grid{stroke:#eaeef2}.axis{stroke:#57606a}
.baseline{stroke:#bf8700;stroke-width:1.5;stroke-dasharray:6 4}
.best{fill:none;stroke:#1a7f37;stroke-width:2}
.validation{fill:#0969da}.minibatch{fill:none;stroke:#8c959f;
stroke-width:1.5}
"""


def render_html(
    title: str,
    summary: Mapping[str, Any],
    candidates: Sequence[Candidate],
    history: Sequence[Mapping[str, Any]],
    spending: Mapping[str, Any],
) -> str:
    """The run as one self-contained HTML page.

    Args:
        title: The page's heading (e.g. the run's name).
        summary: What :func:`summarize` returned.
        candidates: Every candidate, in order of creation.
        history: Per iteration: ``{"iteration", "bestId", "bestScore",
            "candidates": [{"id", "minibatchScore",
            "validationScore"}]}``.
        spending: ``calls``, ``cost`` (USD), ``inputTokens``,
            ``outputTokens``, ``discardedProposals``.

    Returns:
        The page; every text from the run is escaped.
    """
    best_id = str(summary.get("bestId"))
    baseline_id = str(summary.get("baselineId"))
    marks = {baseline_id: "baseline"}
    if best_id != baseline_id:
        marks[best_id] = "best"
    rows = "".join(_candidate_row(c, marks) for c in candidates)
    heads = "".join(
        f"<th>{h}</th>"
        for h in (
            "id",
            "iteration",
            "parents",
            "rationale",
            "minibatch scores",
            "validation",
            "errors",
            "prompt",
        )
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>"
        f"<h2>Result</h2>{_summary(summary, prompt_open=True)}"
        "<h2>Score per iteration</h2>"
        f"{_chart(history, summary.get('baselineScore'))}"
        f"<h2>Spending</h2>{_spending(spending)}"
        f"<h2>Candidates</h2><table><thead><tr>{heads}</tr></thead>"
        f"<tbody>{rows}</tbody></table></body></html>\n"
    )
