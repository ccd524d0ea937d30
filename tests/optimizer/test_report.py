"""The run's summary and its self-contained HTML report."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import pytest

from optimizer.records import Candidate
from optimizer.report import render_html, summarize

IDS = [f"e{i}" for i in range(30)]


def validation(right: int, unscored: int = 0) -> dict[str, float | None]:
    """The first ``right`` examples right, the last ``unscored`` failed."""
    scores: dict[str, float | None] = {
        e: 1.0 if i < right else 0.0 for i, e in enumerate(IDS)
    }
    for e in IDS[len(IDS) - unscored :]:
        scores[e] = None
    return scores


def run() -> list[Candidate]:
    return [
        Candidate("c0", "You are <b>helpful</b>.", validation=validation(10)),
        Candidate("c1", "Answer briefly.", validation=validation(12)),
        Candidate(
            "c2",
            "Answer briefly & show work.",
            parents=["c1"],
            iteration=1,
            rationale="Failures skipped <steps>.",
            minibatch=[
                {
                    "iteration": 1,
                    "score": 0.75,
                    "parentScore": 0.5,
                    "exampleIds": ["e1"],
                }
            ],
            validation=validation(28, unscored=1),
        ),
        Candidate(
            "c3",
            "Only screened.",
            parents=["c1", "c2"],
            iteration=2,
            rationale="Merge.",
            minibatch=[{"iteration": 2, "score": 0.25, "parentScore": 0.75}],
        ),
    ]


HISTORY: list[dict[str, Any]] = [
    {
        "iteration": 0,
        "bestId": "c1",
        "bestScore": 0.4,
        "candidates": [
            {"id": "c0", "minibatchScore": None, "validationScore": 1 / 3},
            {"id": "c1", "minibatchScore": None, "validationScore": 0.4},
        ],
    },
    {
        "iteration": 1,
        "bestId": "c2",
        "bestScore": 28 / 29,
        "candidates": [
            {"id": "c2", "minibatchScore": 0.75, "validationScore": 28 / 29}
        ],
    },
    {
        "iteration": 2,
        "bestId": "c2",
        "bestScore": 28 / 29,
        "candidates": [
            {"id": "c3", "minibatchScore": 0.25, "validationScore": None}
        ],
    },
]

SPENDING = {
    "calls": 1234,
    "cost": 0.5,
    "inputTokens": 45678,
    "outputTokens": 9012,
    "retries": 3,
    "discardedProposals": 1,
}


# summarize


def test_summary_picks_the_best_validated_candidate() -> None:
    summary = summarize(run(), "c1", seed=0)
    assert summary["bestId"] == "c2"
    assert summary["bestPrompt"] == "Answer briefly & show work."
    assert summary["bestScore"] == pytest.approx(28 / 29)
    assert summary["baselineId"] == "c1"
    assert summary["baselineScore"] == pytest.approx(0.4)
    comparison = summary["comparison"]
    assert comparison["n"] == 29 and comparison["excluded"] == 1
    assert comparison["significant"]
    assert comparison["low"] > 0
    assert summary["recommendation"] == "best"
    assert summary["message"].startswith("Significant improvement: +0.")
    assert "95% CI" in summary["message"]
    assert "n=29" in summary["message"]
    assert summary["message"].endswith("use c2.")


def test_summary_is_the_same_for_the_same_seed() -> None:
    assert summarize(run(), "c1", seed=4) == summarize(run(), "c1", seed=4)


def test_tie_goes_to_the_baseline() -> None:
    candidates = [
        Candidate("c0", "seed", validation=validation(12)),
        Candidate("c1", "same score", iteration=1, validation=validation(12)),
    ]
    summary = summarize(candidates, "c0", seed=0)
    assert summary["bestId"] == "c0"
    assert summary["recommendation"] == "baseline"
    assert summary["message"] == (
        "No candidate beat the baseline (c0, 0.400); keep the baseline."
    )


def test_tie_among_later_candidates_goes_to_the_earlier() -> None:
    candidates = [
        Candidate("c0", "seed", validation=validation(10)),
        Candidate("c1", "first", iteration=1, validation=validation(20)),
        Candidate("c2", "second", iteration=2, validation=validation(20)),
    ]
    assert summarize(candidates, "c0", seed=0)["bestId"] == "c1"


def test_small_improvement_is_not_recommended() -> None:
    candidates = [
        Candidate("c0", "seed", validation=validation(14)),
        Candidate("c1", "slightly better", validation=validation(15)),
    ]
    summary = summarize(candidates, "c0", seed=0)
    assert summary["bestId"] == "c1"
    assert summary["recommendation"] == "baseline"
    assert not summary["comparison"]["significant"]
    message = summary["message"]
    assert message.startswith("No significant improvement: +0.033 (95% CI ")
    assert message.endswith(", n=30); keep the baseline.")


def test_too_few_pairs_to_compare() -> None:
    candidates = [
        Candidate("c0", "seed", validation={"e0": 0.0, "e1": None}),
        Candidate("c1", "better", validation={"e0": 1.0, "e1": 1.0}),
    ]
    summary = summarize(candidates, "c0", seed=0)
    assert summary["bestId"] == "c1"
    assert summary["recommendation"] == "baseline"
    assert "n=1" in summary["message"]
    assert summary["message"].endswith("keep the baseline.")


def test_nothing_validated() -> None:
    summary = summarize([Candidate("c0", "seed")], "c0", seed=0)
    assert summary["bestId"] == "c0"
    assert summary["bestScore"] is None
    assert summary["recommendation"] == "baseline"
    assert summary["comparison"]["n"] == 0
    assert "No candidate was scored" in summary["message"]


def test_unknown_baseline() -> None:
    with pytest.raises(ValueError, match="'c9'"):
        summarize(run(), "c9", seed=0)


# render_html


class TagChecker(HTMLParser):
    """Fails on unbalanced tags; records text, tags and attributes."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link"})

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.tags: list[str] = []
        self.attributes: list[str] = []
        self.text: list[str] = []

    def handle_starttag(
        self, tag: str, attrs: list[tuple[str, str | None]]
    ) -> None:
        self.tags.append(tag)
        self.attributes.extend(v or "" for _, v in attrs)
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_startendtag(
        self, tag: str, attrs: list[tuple[str, str | None]]
    ) -> None:
        self.tags.append(tag)
        self.attributes.extend(v or "" for _, v in attrs)

    def handle_endtag(self, tag: str) -> None:
        assert self.open, f"</{tag}> closes nothing"
        assert self.open[-1] == tag, f"</{tag}> closes <{self.open[-1]}>"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def page(title: str = "Run <r1>") -> tuple[str, TagChecker]:
    candidates = run()
    summary = summarize(candidates, "c1", seed=0)
    text = render_html(title, summary, candidates, HISTORY, SPENDING)
    checker = TagChecker()
    checker.feed(text)
    checker.close()
    assert checker.open == [], f"unclosed: {checker.open}"
    return text, checker


def test_html_is_well_formed_and_complete() -> None:
    text, checker = page()
    assert text.startswith("<!DOCTYPE html>")
    assert checker.tags.count("svg") == 1
    assert checker.tags.count("details") == 5  # best prompt + 4 candidates
    words = " ".join(checker.text)
    for expected in (
        "Significant improvement",
        "c2",
        "1,234",
        "$0.5000",
        "45,678",
        "best so far",
        "baseline",
        "iteration",
    ):
        assert expected in words


def test_html_works_offline() -> None:
    text, checker = page()
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text
    assert "script" not in checker.tags and "link" not in checker.tags
    # Only in-page links (a candidate's parents).
    hrefs = [a for a in checker.attributes if a.startswith("#")]
    assert "#cand-c1" in hrefs


def test_html_escapes_everything_from_the_run() -> None:
    text, checker = page()
    assert "<b>" not in text and "&lt;b&gt;helpful&lt;/b&gt;" in text
    assert "&lt;steps&gt;" in text
    assert "briefly &amp; show work" in text
    assert "<r1>" not in text and "Run &lt;r1&gt;" in text
    assert "You are <b>helpful</b>." in "".join(checker.text)


def test_chart_draws_points_best_line_and_baseline() -> None:
    text, _ = page()
    # 3 validation dots, 2 minibatch dots, plus the legend's two.
    assert text.count('<circle class="validation"') == 3 + 1
    assert text.count('<circle class="minibatch"') == 2 + 1
    assert '<polyline class="best"' in text
    assert text.count('<line class="baseline"') == 1 + 1
    assert "<title>c2 validation 0.966</title>" in text


def test_candidate_table_shows_lineage_scores_and_errors() -> None:
    text, _ = page()
    row = text[text.index('<tr id="cand-c3"') :].split("</tr>")[0]
    assert '<a href="#cand-c1">c1</a>, <a href="#cand-c2">c2</a>' in row
    assert "it 2: 0.250 (parent 0.750)" in row
    assert "Merge." in row
    c2 = text[text.index('<tr id="cand-c2"') :].split("</tr>")[0]
    assert '<span class="badge">best</span>' in c2
    assert "<td>0.966</td><td>1</td>" in c2  # score, then 1 unscored


def test_html_with_an_empty_run() -> None:
    candidates = [Candidate("c0", "seed")]
    summary = summarize(candidates, "c0", seed=0)
    text = render_html("empty", summary, candidates, [], {})
    checker = TagChecker()
    checker.feed(text)
    assert checker.open == []
    assert "<svg" in text
    assert "No candidate was scored" in text
