"""A simulated prompt-optimization task whose accuracy is a known function.

The target model answers arithmetic questions ("What is 17 + 25?"). How
often it is right depends only on which known instructions its system
prompt contains (:func:`task_accuracy`); whether its reply is a bare
number depends on :data:`FORMAT_INSTRUCTION`. Each question carries a
fixed uniform value from a stable hash, and the answer is right when that
value is below the prompt's accuracy, so a better prompt fixes a superset
of the questions a worse one got right. The scripted meta model
(:func:`meta_answer`) proposes prompts by adding one known instruction to
its parent. Together they let tests, demos and benchmarks check that an
optimizer finds better prompts, and by how much, without a real model.

Everything here is pure and deterministic: no I/O, no global randomness,
and hashes come from :mod:`hashlib` (Python's ``hash`` is salted per
process).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

HELPFUL_INSTRUCTIONS: tuple[str, ...] = (
    "Work through the arithmetic step by step before answering.",
    "Double-check the result before you reply.",
    "Pay close attention to the operator: plus, minus or times.",
)
HARMFUL_INSTRUCTIONS: tuple[str, ...] = (
    "Answer as fast as you can, guessing is fine.",
    "Estimate roughly instead of calculating exactly.",
    "Skip any checking to save time.",
)
NEUTRAL_INSTRUCTIONS: tuple[str, ...] = (
    "Be polite and friendly.",
    "You enjoy helping people with numbers.",
    "Use British spelling.",
)
FORMAT_INSTRUCTION = "Reply with the number only."
STARTING_PROMPT = "You are a calculator. Answer the user's question."

_BASE_ACCURACY = 0.35
_HELPFUL_GAIN = 0.18
_HARMFUL_LOSS = 0.2
_MIN_ACCURACY = 0.05
_MAX_ACCURACY = 0.95
_CONTROL_ACCURACY = 0.6
_UNKNOWN_ANSWER = "I don't know"
_REFUSAL = "I cannot help with that."
# A meta prompt asking for absurdly many candidates gets this many.
_MAX_CANDIDATES = 100

# The order is part of the contract: the meta model's choices index it.
_POOL: tuple[str, ...] = (
    *HELPFUL_INSTRUCTIONS,
    *HARMFUL_INSTRUCTIONS,
    *NEUTRAL_INSTRUCTIONS,
    FORMAT_INSTRUCTION,
)
_TIMES = "\N{MULTIPLICATION SIGN}"
_MINUS = "\N{MINUS SIGN}"
_OPERATORS = {"+": "+", "-": "-", _MINUS: "-", _TIMES: "*", "*": "*", "x": "*"}
_QUESTION = re.compile(rf"(-?\d+)\s*([-+{_MINUS}{_TIMES}*x])\s*(-?\d+)")
_BARE_NUMBER = re.compile(r"-?\d+")
_PROMPT_BLOCK = re.compile(r"<prompt\b[^>]*>\n?(.*?)\n?</prompt>", re.DOTALL)
_FAILURE_BLOCK = re.compile(r"<failure>(.*?)</failure>", re.DOTALL)
_GOT = re.compile(r"<got>(.*?)</got>", re.DOTALL)
_COUNT = re.compile(r"<count>\s*(\d+)\s*</count>")


def _normalize(text: str) -> str:
    return " ".join(text.casefold().split())


def contains(system_prompt: str, instruction: str) -> bool:
    """Whether a prompt contains an instruction.

    Args:
        system_prompt: The prompt.
        instruction: One of the known instructions.

    Returns:
        True when the instruction, casefolded and with its whitespace
        collapsed, is a substring of the prompt normalized the same way.
    """
    return _normalize(instruction) in _normalize(system_prompt)


def _count_present(system_prompt: str, instructions: Iterable[str]) -> int:
    return sum(contains(system_prompt, i) for i in instructions)


def task_accuracy(system_prompt: str) -> float:
    """The probability that the target model answers a question right.

    Args:
        system_prompt: The target model's system prompt.

    Returns:
        ``0.35 + 0.18`` per helpful instruction present ``- 0.2`` per
        harmful one, clamped to ``[0.05, 0.95]``.
    """
    raw = (
        _BASE_ACCURACY
        + _HELPFUL_GAIN * _count_present(system_prompt, HELPFUL_INSTRUCTIONS)
        - _HARMFUL_LOSS * _count_present(system_prompt, HARMFUL_INSTRUCTIONS)
    )
    return min(_MAX_ACCURACY, max(_MIN_ACCURACY, raw))


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _unit(digest: bytes) -> float:
    """A uniform value in [0, 1) from the digest's first 8 bytes."""
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _solve(user_message: str) -> int | None:
    match = _QUESTION.search(user_message)
    if match is None:
        return None
    left, operator, right = match.groups()
    a, b = int(left), int(right)
    op = _OPERATORS[operator]
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    return a * b


def _reply(user_message: str, accuracy: float, *, always_bare: bool) -> str:
    right = _solve(user_message)
    if right is None:
        return _UNKNOWN_ANSWER
    # Hash the question alone (normalized, so templating whitespace does
    # not matter): its fate depends on the prompt only via `accuracy`.
    digest = _digest(_normalize(user_message))
    number = right
    if _unit(digest) >= accuracy:
        offset = 1 + digest[8] % 3
        number = right + offset if digest[9] % 2 else right - offset
    if always_bare or digest[10] % 2 == 0:
        return str(number)
    return f"The answer is {number}."


def task_answer(system_prompt: str, user_message: str) -> str:
    """The target model's deterministic reply.

    Args:
        system_prompt: The system prompt.
        user_message: A question such as ``"What is 17 + 25?"``.

    Returns:
        ``"I don't know"`` when the message holds no ``a op b``; else the
        result (right when the question's hash value is below
        :func:`task_accuracy`, otherwise off by 1 to 3), as the bare
        number when the prompt has :data:`FORMAT_INSTRUCTION` and for
        about half the questions otherwise, else as ``"The answer is
        N."``.
    """
    return _reply(
        user_message,
        task_accuracy(system_prompt),
        always_bare=contains(system_prompt, FORMAT_INSTRUCTION),
    )


def control_answer(system_prompt: str, user_message: str) -> str:
    """The control model's reply: no prompt changes it.

    Args:
        system_prompt: Ignored.
        user_message: A question such as ``"What is 17 + 25?"``.

    Returns:
        The bare number, right with the fixed probability 0.6 (the same
        hash rule as :func:`task_answer`), or ``"I don't know"``.
    """
    del system_prompt  # the point of the control task
    return _reply(user_message, _CONTROL_ACCURACY, always_bare=True)


def task_dataset(size: int, seed: int = 0) -> list[dict[str, Any]]:
    """Arithmetic examples with their expected answers.

    Args:
        size: How many examples.
        seed: Seed of the generator; the same seed gives the same list.

    Returns:
        Examples ``{"id": "q0001", "inputs": {"input": "What is 17 +
        25?"}, "expected": "42"}`` mixing plus, minus and times (no
        negative results).
    """
    rng = random.Random(seed)
    examples = []
    for i in range(size):
        operator = rng.choice(("+", "-", _TIMES))
        if operator == _TIMES:
            a, b = rng.randint(2, 20), rng.randint(2, 20)
        else:
            a, b = rng.randint(2, 99), rng.randint(2, 99)
            if operator == "-" and a < b:
                a, b = b, a
        question = f"What is {a} {operator} {b}?"
        examples.append(
            {
                "id": f"q{i + 1:04d}",
                "inputs": {"input": question},
                "expected": str(_solve(question)),
            }
        )
    return examples


def exact_match_rate(
    system_prompt: str, dataset: Sequence[Mapping[str, Any]]
) -> float:
    """The true exact-match score of a prompt on a dataset.

    Args:
        system_prompt: The target model's system prompt.
        dataset: Examples shaped like :func:`task_dataset`'s.

    Returns:
        The share of examples whose :func:`task_answer` equals
        ``expected`` exactly (0.0 for an empty dataset).
    """
    if not dataset:
        return 0.0
    hits = sum(
        task_answer(system_prompt, str(example["inputs"]["input"]))
        == str(example["expected"])
        for example in dataset
    )
    return hits / len(dataset)


def expected_exact_accuracy(
    system_prompt: str,
    examples: Sequence[Mapping[str, Any]] | None = None,
) -> float:
    """The exact-match score a prompt earns, on examples or on average.

    Args:
        system_prompt: The target model's system prompt.
        examples: A dataset; when given, the answer is
            :func:`exact_match_rate` on it.

    Returns:
        With examples, the true score on them; without, its expectation
        over questions: :func:`task_accuracy`, halved when the prompt
        lacks :data:`FORMAT_INSTRUCTION` (half the right answers are then
        worded).
    """
    if examples is not None:
        return exact_match_rate(system_prompt, examples)
    accuracy = task_accuracy(system_prompt)
    if contains(system_prompt, FORMAT_INSTRUCTION):
        return accuracy
    return accuracy / 2


def best_prompt() -> str:
    """The best prompt: every helpful instruction and the format one."""
    return "\n".join(
        (STARTING_PROMPT, *HELPFUL_INSTRUCTIONS, FORMAT_INSTRUCTION)
    )


def _choose(meta_prompt: str, index: int, choices: Sequence[str]) -> str:
    digest = _digest(f"{meta_prompt}\x00{index}")
    return choices[int.from_bytes(digest[:8], "big") % len(choices)]


def _needs_format(meta_prompt: str, parent: str) -> bool:
    if contains(parent, FORMAT_INSTRUCTION):
        return False
    for failure in _FAILURE_BLOCK.findall(meta_prompt):
        got = _GOT.search(failure)
        if got is not None and not _BARE_NUMBER.fullmatch(
            got.group(1).strip()
        ):
            return True
    return False


def _json_words_safe(document: Mapping[str, Any]) -> str:
    r"""JSON text that survives the fake server's whitespace tokenizing.

    The server re-joins an answer's words with single spaces, so a run of
    spaces inside a string would shrink; spelling every second space as
    ``\u0020`` keeps the decoded text exact (outside strings ``json``
    never writes two spaces in a row).
    """
    return json.dumps(document).replace("  ", " \\u0020")


def meta_answer(meta_prompt: str) -> str:
    """The scripted meta model's reply to an optimizer's meta prompt.

    Args:
        meta_prompt: Parent prompts as ``<prompt id=".." score="..">``
            blocks (the first is the one to improve), optional
            ``<failure>`` blocks with ``<got>``, and ``<count>N</count>``
            (1 when absent).

    Returns:
        ``{"candidates": [{"prompt", "rationale"}, ...]}`` as JSON: N
        candidates, each the first parent plus one known instruction it
        lacks on a new line, picked by a stable hash of (meta prompt,
        index) and distinct while possible; the first adds
        :data:`FORMAT_INSTRUCTION` when a failure's answer was not a bare
        number and the parent lacks it. No candidates when the parent
        already has every instruction. Without a ``<prompt`` block, a
        refusal that is not JSON.
    """
    blocks = _PROMPT_BLOCK.findall(meta_prompt)
    if not blocks:
        return _REFUSAL
    parent = blocks[0]
    count_match = _COUNT.search(meta_prompt)
    count = int(count_match.group(1)) if count_match else 1
    count = min(count, _MAX_CANDIDATES)
    missing = [i for i in _POOL if not contains(parent, i)]
    candidates: list[dict[str, str]] = []
    chosen: list[str] = []
    for index in range(count if missing else 0):
        if index == 0 and _needs_format(meta_prompt, parent):
            instruction = FORMAT_INSTRUCTION
            rationale = (
                "Some answers were not bare numbers, so this adds: "
                f"{instruction}"
            )
        else:
            fresh = [i for i in missing if i not in chosen]
            instruction = _choose(meta_prompt, index, fresh or missing)
            rationale = f"Adds the instruction: {instruction}"
        chosen.append(instruction)
        candidates.append(
            {
                "prompt": f"{parent.rstrip()}\n{instruction}",
                "rationale": rationale,
            }
        )
    return _json_words_safe({"candidates": candidates})
