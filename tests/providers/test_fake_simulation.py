"""The simulated prompt-optimization task, alone and over the vendor SDKs."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from providers.fake import BehaviourError, FakeConfig, FakeProviderServer
from providers.fake.__main__ import DEMO_MODELS, with_demo_models
from providers.fake.simulation import (
    FORMAT_INSTRUCTION,
    HARMFUL_INSTRUCTIONS,
    HELPFUL_INSTRUCTIONS,
    NEUTRAL_INSTRUCTIONS,
    STARTING_PROMPT,
    best_prompt,
    control_answer,
    exact_match_rate,
    expected_exact_accuracy,
    meta_answer,
    task_accuracy,
    task_answer,
    task_dataset,
)

POOL = (
    *HELPFUL_INSTRUCTIONS,
    *HARMFUL_INSTRUCTIONS,
    *NEUTRAL_INSTRUCTIONS,
    FORMAT_INSTRUCTION,
)
DATASET = task_dataset(200)
QUESTIONS = [example["inputs"]["input"] for example in DATASET]


def with_lines(*lines: str) -> str:
    return "\n".join((STARTING_PROMPT, *lines))


def number_in(reply: str) -> int:
    match = re.search(r"-?\d+", reply)
    assert match is not None, reply
    return int(match.group())


def right_answers(prompt: str) -> set[str]:
    """The questions a prompt gets right, whatever the wording."""
    return {
        example["id"]
        for example in DATASET
        if number_in(task_answer(prompt, example["inputs"]["input"]))
        == int(example["expected"])
    }


def meta_prompt(
    parents: list[str], count: int, gots: tuple[str, ...] = ()
) -> str:
    blocks = [
        f'<prompt id="c{i}" score="0.{i + 3}">\n{text}\n</prompt>'
        for i, text in enumerate(parents)
    ]
    failures = [
        "<failure>\n<input>What is 2 + 2?</input>\n<expected>4</expected>\n"
        f"<got>{got}</got>\n<feedback>wrong</feedback>\n</failure>"
        for got in gots
    ]
    return "\n".join(
        [
            "Improve the first prompt.",
            *blocks,
            *failures,
            f"<count>{count}</count>",
        ]
    )


def added_instructions(parent: str, candidate: str) -> list[str]:
    def normal(text: str) -> str:
        return " ".join(text.casefold().split())

    return [
        i
        for i in POOL
        if normal(i) in normal(candidate) and normal(i) not in normal(parent)
    ]


# -- the task -------------------------------------------------------------


def test_instructions_are_distinct_and_absent_from_the_start() -> None:
    normal = [" ".join(i.casefold().split()) for i in POOL]
    for i, one in enumerate(normal):
        assert one not in STARTING_PROMPT.casefold()
        for j, other in enumerate(normal):
            assert i == j or one not in other


def test_accuracy_is_the_known_function_of_the_prompt() -> None:
    assert task_accuracy(STARTING_PROMPT) == pytest.approx(0.35)
    assert task_accuracy(with_lines(*HELPFUL_INSTRUCTIONS[:1])) == (
        pytest.approx(0.53)
    )
    assert task_accuracy(best_prompt()) == pytest.approx(0.89)
    assert task_accuracy(with_lines(*HARMFUL_INSTRUCTIONS)) == 0.05
    assert task_accuracy(with_lines(*NEUTRAL_INSTRUCTIONS)) == (
        pytest.approx(0.35)
    )
    # Contained means: casefolded, whitespace collapsed, anywhere.
    shouted = "  CALCULATOR.  " + HELPFUL_INSTRUCTIONS[0].upper().replace(
        " ", "\n  "
    )
    assert task_accuracy(shouted) == pytest.approx(0.53)


def test_a_helpful_instruction_never_breaks_a_right_answer() -> None:
    prompts = [
        STARTING_PROMPT,
        with_lines(HARMFUL_INSTRUCTIONS[0]),
        with_lines(HELPFUL_INSTRUCTIONS[1], NEUTRAL_INSTRUCTIONS[0]),
    ]
    for prompt in prompts:
        before = right_answers(prompt)
        for helpful in HELPFUL_INSTRUCTIONS:
            after = right_answers(f"{prompt}\n{helpful}")
            assert before <= after
    assert right_answers(STARTING_PROMPT) < right_answers(best_prompt())


def test_the_best_prompt_scores_as_predicted() -> None:
    best = exact_match_rate(best_prompt(), DATASET)
    start = exact_match_rate(STARTING_PROMPT, DATASET)
    assert best > start + 0.5
    for prompt in (best_prompt(), STARTING_PROMPT, with_lines(*POOL)):
        measured = exact_match_rate(prompt, DATASET)
        assert measured == expected_exact_accuracy(prompt, DATASET)
        assert measured == pytest.approx(
            expected_exact_accuracy(prompt), abs=0.08
        )
    assert expected_exact_accuracy(STARTING_PROMPT) == pytest.approx(0.175)
    assert expected_exact_accuracy(best_prompt()) == pytest.approx(0.89)


def test_the_format_instruction_makes_every_reply_a_bare_number() -> None:
    worded = [task_answer(STARTING_PROMPT, q) for q in QUESTIONS]
    bare = [task_answer(with_lines(FORMAT_INSTRUCTION), q) for q in QUESTIONS]
    assert all(re.fullmatch(r"-?\d+", reply) for reply in bare)
    sentences = [r for r in worded if r.startswith("The answer is ")]
    assert 60 < len(sentences) < 140
    assert all(re.fullmatch(r"The answer is -?\d+\.", r) for r in sentences)
    # The format changes the wording, never the number.
    assert [number_in(r) for r in worded] == [number_in(r) for r in bare]


def test_wrong_answers_are_near_misses_and_nonsense_is_unknown() -> None:
    for example in DATASET:
        got = number_in(
            task_answer(STARTING_PROMPT, example["inputs"]["input"])
        )
        assert abs(got - int(example["expected"])) <= 3
    assert task_answer(best_prompt(), "Tell me a joke.") == "I don't know"
    assert control_answer(best_prompt(), "") == "I don't know"
    assert number_in(task_answer(best_prompt(), "What is 6 x 7?")) in range(
        39, 46
    )


def test_the_control_task_ignores_the_prompt() -> None:
    prompts = [STARTING_PROMPT, best_prompt(), with_lines(*POOL), ""]
    for question in QUESTIONS:
        replies = {control_answer(prompt, question) for prompt in prompts}
        assert len(replies) == 1
        assert re.fullmatch(r"-?\d+", replies.pop())
    right = sum(
        control_answer("", e["inputs"]["input"]) == e["expected"]
        for e in DATASET
    )
    assert right / len(DATASET) == pytest.approx(0.6, abs=0.08)


def test_the_dataset_is_seeded_and_mixes_the_operators() -> None:
    assert task_dataset(50, seed=3) == task_dataset(50, seed=3)
    assert task_dataset(50, seed=3) != task_dataset(50, seed=4)
    assert [e["id"] for e in DATASET[:2]] == ["q0001", "q0002"]
    assert len({e["id"] for e in DATASET}) == len(DATASET)
    operators = {q.split()[3] for q in QUESTIONS}
    assert operators == {"+", "-", "\N{MULTIPLICATION SIGN}"}
    for example in DATASET:
        a, op, b = example["inputs"]["input"][8:-1].split()
        value = {"+": int(a) + int(b), "-": int(a) - int(b)}.get(
            op, int(a) * int(b)
        )
        assert example["expected"] == str(value)


# -- the meta model -------------------------------------------------------


def test_meta_proposes_count_candidates_each_adding_one_instruction() -> None:
    parent = with_lines(NEUTRAL_INSTRUCTIONS[0])
    prompt = meta_prompt([parent, best_prompt()], count=5)
    reply = meta_answer(prompt)
    assert reply == meta_answer(prompt)
    candidates = json.loads(reply)["candidates"]
    assert len(candidates) == 5
    added = []
    for candidate in candidates:
        assert set(candidate) == {"prompt", "rationale"}
        (instruction,) = added_instructions(parent, candidate["prompt"])
        assert candidate["prompt"] == f"{parent}\n{instruction}"
        assert instruction in candidate["rationale"]
        added.append(instruction)
    assert len(set(added)) == 5  # distinct while the pool allows


def test_meta_candidates_keep_the_parent_text_exactly() -> None:
    parent = "You  are a\tcalculator.   Be exact."
    (candidate,) = json.loads(meta_answer(meta_prompt([parent], 1)))[
        "candidates"
    ]
    assert candidate["prompt"].startswith(parent + "\n")
    # The reply survives the fake server's word splitting unchanged.
    assert " ".join(meta_answer(meta_prompt([parent], 3)).split()) == (
        meta_answer(meta_prompt([parent], 3))
    )


def test_meta_reads_failures_that_are_not_bare_numbers() -> None:
    worded = meta_prompt([STARTING_PROMPT], 3, gots=("41", "The answer is 5."))
    first, *_ = json.loads(meta_answer(worded))["candidates"]
    assert first["prompt"] == with_lines(FORMAT_INSTRUCTION)
    assert FORMAT_INSTRUCTION in first["rationale"]

    formatted = with_lines(FORMAT_INSTRUCTION)
    again = meta_prompt([formatted], 3, gots=("The answer is 5.",))
    for candidate in json.loads(meta_answer(again))["candidates"]:
        assert len(added_instructions(formatted, candidate["prompt"])) == 1
        assert candidate["prompt"].count(FORMAT_INSTRUCTION) == 1


def test_meta_without_a_prompt_block_is_not_json() -> None:
    for garbage in ("", "Please improve my prompt.", "<count>3</count>"):
        with pytest.raises(json.JSONDecodeError):
            json.loads(meta_answer(garbage))


def test_meta_has_nothing_to_add_to_a_complete_prompt() -> None:
    reply = meta_answer(meta_prompt([with_lines(*POOL)], 4))
    assert json.loads(reply) == {"candidates": []}


# -- the fake server's behaviour field ------------------------------------


@pytest.mark.parametrize("value", ["tasks", 3, ["task"]])
def test_simulate_is_validated(value: Any) -> None:
    with pytest.raises(BehaviourError, match=r"models\.m\.simulate"):
        FakeConfig({"models": {"m": {"simulate": value}}})


def test_simulate_wins_over_reply_and_rules() -> None:
    config = FakeConfig(
        {
            "default": {
                "reply": "fixed",
                "rules": [{"match": ".", "reply": "r"}],
            },
            "models": {"t": {"simulate": "task"}, "m": {"simulate": "meta"}},
        }
    )
    question = QUESTIONS[0]
    assert config.behaviour("t").answer(best_prompt(), question) == (
        task_answer(best_prompt(), question)
    )
    meta = meta_prompt([STARTING_PROMPT], 2)
    assert config.behaviour("m").answer("", meta) == meta_answer(meta)
    assert config.behaviour("other").answer("", question) == "r"


def test_the_cli_serves_the_demo_models_unless_configured() -> None:
    document = with_demo_models({"models": {"demo-task": {"reply": "x"}}})
    assert document["models"]["demo-task"] == {"reply": "x"}
    assert document["models"]["demo-meta"] == DEMO_MODELS["demo-meta"]
    config = FakeConfig(with_demo_models({}))
    assert config.behaviour("demo-task-control").simulate == "control"
    assert config.behaviour("demo-task").latency_ms == 20


# -- over the wire, with the vendors' SDKs --------------------------------


@pytest.mark.anyio
async def test_openai_sdk_gets_the_simulated_answers(
    fake: FakeProviderServer,
) -> None:
    from openai import AsyncOpenAI, RateLimitError

    fake.configure(
        models={
            "sim-task": {"simulate": "task"},
            "sim-meta": {"simulate": "meta"},
            "sim-busy": {
                "simulate": "task",
                "faults": [{"kind": "rate_limit"}],
            },
        }
    )
    client = AsyncOpenAI(
        api_key="unused", base_url=f"{fake.url}/v1", max_retries=0
    )
    async with client:
        for question in QUESTIONS[:6]:
            for stream in (False, True):
                messages: Any = [
                    {"role": "system", "content": STARTING_PROMPT},
                    {"role": "user", "content": question},
                ]
                if stream:
                    chunks = await client.chat.completions.create(
                        model="sim-task", messages=messages, stream=True
                    )
                    text = "".join(
                        [
                            c.choices[0].delta.content or ""
                            async for c in chunks
                            if c.choices
                        ]
                    )
                else:
                    completion = await client.chat.completions.create(
                        model="sim-task", messages=messages
                    )
                    text = completion.choices[0].message.content or ""
                assert text == task_answer(STARTING_PROMPT, question)

        meta = meta_prompt(["You  are a calculator."], 3, gots=("x",))
        completion = await client.chat.completions.create(
            model="sim-meta", messages=[{"role": "user", "content": meta}]
        )
        content = completion.choices[0].message.content or ""
        assert json.loads(content) == json.loads(meta_answer(meta))

        # Faults still fire before the simulation answers.
        with pytest.raises(RateLimitError):
            await client.chat.completions.create(
                model="sim-busy",
                messages=[{"role": "user", "content": QUESTIONS[0]}],
            )
    assert fake.stats("sim-task")["requests"] == 12


@pytest.mark.anyio
async def test_anthropic_sdk_gets_the_simulated_answer(
    fake: FakeProviderServer,
) -> None:
    from anthropic import AsyncAnthropic

    fake.configure(models={"sim-task-claude": {"simulate": "task"}})
    client = AsyncAnthropic(api_key="unused", base_url=fake.url, max_retries=0)
    async with client:
        for question in QUESTIONS[:4]:
            message = await client.messages.create(
                model="sim-task-claude",
                max_tokens=64,
                system=best_prompt(),
                messages=[{"role": "user", "content": question}],
            )
            text = "".join(
                block.text for block in message.content if block.type == "text"
            )
            assert text == task_answer(best_prompt(), question)
