import json
import re

import pytest

from optimizer.records import Answer, Candidate
from optimizer.strategies.proposal import (
    Failure,
    MetaProposer,
    ParentView,
    meta_prompt,
    neutralize,
    parse_reply,
)
from providers.base import CompletionRequest
from providers.fake import simulation as sim

pytestmark = pytest.mark.anyio

PROMPT_BLOCK = re.compile(
    r'<prompt id="(\w+)"(?: score="([\d.]+)")?>\n(.*?)\n</prompt>', re.DOTALL
)


class ScriptedMeta:
    """A ModelCall whose replies come from a list (or the simulation)."""

    def __init__(self, replies: list[str | None] | None = None) -> None:
        self.replies = replies
        self.requests: list[tuple[str, CompletionRequest]] = []

    async def __call__(self, model: str, request: CompletionRequest) -> Answer:
        self.requests.append((model, request))
        text = request.messages[-1].content
        if self.replies is None:
            reply: str | None = sim.meta_answer(text)
        else:
            reply = self.replies.pop(0)
        return Answer(
            key=f"meta{len(self.requests)}",
            text=reply,
            error=None if reply is not None else "server: down",
            input_tokens=100,
            output_tokens=50,
            cost=0.01,
        )


def _views() -> list[ParentView]:
    parent = ParentView(
        Candidate("c3", "Answer the question."),
        0.625,
        [
            Failure("What is 2 + 2?", "4", "The answer is 5.", "wrong"),
            Failure("What is 3 * 3?", None, "8", None),
        ],
    )
    other = ParentView(Candidate("c1", "Be exact."), 0.5, [])
    return [parent, other]


def test_meta_prompt_has_the_fixed_blocks() -> None:
    text = meta_prompt(_views(), 3)
    blocks = PROMPT_BLOCK.findall(text)
    assert blocks == [
        ("c3", "0.62", "Answer the question."),
        ("c1", "0.50", "Be exact."),
    ]
    assert "<count>3</count>" in text
    assert (
        "<failure>\n<input>What is 2 + 2?</input>\n<expected>4</expected>\n"
        "<got>The answer is 5.</got>\n<feedback>wrong</feedback>\n</failure>"
    ) in text
    assert "<failure>\n<input>What is 3 * 3?</input>\n<got>8</got>\n" in text
    assert '{"candidates": [{"prompt": ' in text
    assert "JSON only" in text
    assert "general" in text


def test_meta_prompt_without_failures_or_score() -> None:
    view = ParentView(Candidate("c0", "Hi."), None, [])
    text = meta_prompt([view], 1)
    assert '<prompt id="c0">\nHi.\n</prompt>' in text
    assert "<failure>" not in text
    with pytest.raises(ValueError):
        meta_prompt([], 1)


def test_closing_tags_inside_text_cannot_end_a_block() -> None:
    tricky = "Say </prompt> and </PROMPT > and </got> freely."
    assert "</prompt" not in neutralize(tricky).lower()
    view = ParentView(
        Candidate("c0", tricky),
        0.5,
        [Failure("x </input> y", "</expected>", "</got>", "</failure>")],
    )
    text = meta_prompt([view], 2)
    assert text.count("</prompt>") == 1
    assert text.count("</failure>") == 1
    assert text.count("</got>") == 1
    assert PROMPT_BLOCK.findall(text)[0][2] == neutralize(tricky)


def _reply(*entries: object) -> str:
    return json.dumps({"candidates": list(entries)})


def test_parse_plain_fenced_and_embedded_json() -> None:
    entry = {"prompt": "New prompt", "rationale": "because"}
    for text in (
        _reply(entry),
        f"```json\n{_reply(entry)}\n```",
        f"Sure! Here you go:\n{_reply(entry)}\nGood luck.",
        f"```\n{_reply(entry)}```",
    ):
        proposals, discarded = parse_reply(text, ["Old"], 1)
        assert [(p.prompt, p.rationale) for p in proposals] == [
            ("New prompt", "because")
        ]
        assert discarded == 0


def test_parse_discards_and_counts_malformed_entries() -> None:
    text = _reply(
        {"prompt": "Good one"},
        {"prompt": ""},
        {"prompt": "   "},
        {"prompt": 42},
        {"rationale": "no prompt"},
        "just a string",
        {"prompt": " Old "},  # the parent again
        {"prompt": "Good one"},  # a duplicate
        {"prompt": "Second", "rationale": 7},
    )
    proposals, discarded = parse_reply(text, ["Old"], 8)
    assert [(p.prompt, p.rationale) for p in proposals] == [
        ("Good one", None),
        ("Second", None),
    ]
    assert discarded == 7


def test_parse_counts_missing_and_surplus_entries() -> None:
    two = _reply({"prompt": "A"}, {"prompt": "B"})
    assert parse_reply(two, [], 3)[1] == 1
    proposals, discarded = parse_reply(two, [], 1)
    assert [p.prompt for p in proposals] == ["A"]
    assert discarded == 1


@pytest.mark.parametrize(
    "text",
    [None, "", "I cannot help with that.", "{not json", '{"other": []}', "42"],
)
def test_unusable_reply_discards_everything(text: str | None) -> None:
    assert parse_reply(text, ["Old"], 4) == ([], 4)


async def test_meta_proposer_with_the_scripted_meta_model() -> None:
    call = ScriptedMeta()
    proposer = MetaProposer(call, "meta-model", temperature=0.7)
    start = ParentView(
        Candidate("c0", sim.STARTING_PROMPT),
        0.2,
        [Failure("What is 2 + 2?", "4", "The answer is 4.", None)],
    )
    batch = await proposer.propose([start], 3)
    assert batch.discarded == 0
    assert batch.answer is not None
    assert batch.answer.cost == 0.01
    assert len(batch.proposals) == 3
    # A worded answer makes the scripted meta model add the format rule.
    assert sim.FORMAT_INSTRUCTION in batch.proposals[0].prompt
    for proposal in batch.proposals:
        assert proposal.prompt.startswith(sim.STARTING_PROMPT)
        assert proposal.rationale
    model, request = call.requests[0]
    assert model == "meta-model"
    assert request.temperature == 0.7
    assert request.system_prompt is None


async def test_meta_proposer_failed_or_refused_call_is_not_an_exception() -> (
    None
):
    call = ScriptedMeta([None, "I cannot help with that."])
    proposer = MetaProposer(call, "meta-model")
    view = ParentView(Candidate("c0", "x"), 0.1, [])
    for _ in range(2):
        batch = await proposer.propose([view], 2)
        assert batch.proposals == []
        assert batch.discarded == 2
        assert batch.answer is not None
