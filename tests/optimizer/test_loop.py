"""The search loop against the simulated task (no Ray, no database)."""

import copy
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from optimizer.config import BudgetConfig, RunConfig, SplitConfig
from optimizer.dataset import render_user_message, split_dataset
from optimizer.loop import SearchLoop, paired_scores
from optimizer.protocols import EvalRequest
from optimizer.records import Answer, Example, Outcome
from optimizer.state import RunState
from optimizer.strategies.proposal import MetaProposer
from optimizer.strategies.selection import BestSelector, CandidateSelector
from providers.base import CompletionRequest
from providers.fake import simulation as sim

pytestmark = pytest.mark.anyio

Key = tuple[str, str]
TARGET_COST = 0.001  # USD per target call
META_COST = 0.01  # USD per meta call
COUNT = re.compile(r"<count>(\d+)</count>")
FAILURE_INPUT = re.compile(r"<failure>\n<input>(.*?)</input>", re.DOTALL)


class SimEvaluator:
    """Answers with a known function of the prompt; exact-match scores.

    Outcomes are kept by (prompt, example id) like the answer store, so
    a second evaluator sharing ``store`` replays them without new work.
    """

    def __init__(
        self,
        answer: Callable[[str, str], str] = sim.task_answer,
        *,
        store: dict[Key, Outcome] | None = None,
        failing: frozenset[str] = frozenset(),
    ) -> None:
        self.answer = answer
        self.store = {} if store is None else store
        self.failing = failing
        self.asked: list[Key] = []
        self.fresh: list[Key] = []
        self.batches: list[int] = []
        self.calls = 0

    async def evaluate_all(
        self, requests: Sequence[EvalRequest]
    ) -> list[list[Outcome]]:
        self.batches.append(len(requests))
        return [
            [self._one(r.candidate.prompt, e) for e in r.examples]
            for r in requests
        ]

    def _one(self, prompt: str, example: Example) -> Outcome:
        key = (prompt, example.id)
        self.asked.append(key)
        if key not in self.store:
            self.fresh.append(key)
            self.store[key] = self._evaluate(prompt, example)
        outcome = self.store[key]
        self.calls += outcome.calls
        return outcome

    def _evaluate(self, prompt: str, example: Example) -> Outcome:
        spent: dict[str, Any] = {
            "calls": 1,
            "cost": TARGET_COST,
            "input_tokens": 20,
            "output_tokens": 5,
        }
        if example.id in self.failing:
            return Outcome(
                example.id, None, None, error="server: unavailable", **spent
            )
        output = self.answer(prompt, render_user_message("{{input}}", example))
        right = output == example.expected
        return Outcome(
            example.id,
            output,
            1.0 if right else 0.0,
            feedback=None if right else f"expected {example.expected}",
            **spent,
        )


class SimMeta:
    """The scripted meta model as a ModelCall, its answers stored."""

    def __init__(
        self,
        reply: Callable[[str], str | None] = sim.meta_answer,
        *,
        store: dict[str, Answer] | None = None,
    ) -> None:
        self.reply = reply
        self.store = {} if store is None else store
        self.prompts: list[str] = []
        self.fresh: list[str] = []

    async def __call__(self, model: str, request: CompletionRequest) -> Answer:
        text = request.messages[-1].content
        self.prompts.append(text)
        if text not in self.store:
            self.fresh.append(text)
            reply = self.reply(text)
            self.store[text] = Answer(
                key=f"meta{len(self.store)}",
                text=reply,
                error=None if reply is not None else "server: down",
                input_tokens=300,
                output_tokens=80,
                cost=META_COST,
            )
        return self.store[text]

    @property
    def calls(self) -> int:
        return len(self.prompts)


def _config(seed: int = 0, **budget: Any) -> RunConfig:
    settings: dict[str, Any] = {
        "iterations": 6,
        "candidates_per_iteration": 3,
        "patience": 10,
    }
    settings.update(budget)
    return RunConfig(
        target_model="target",
        meta_model="meta",
        split=SplitConfig(validation_size=20),
        budget=BudgetConfig(**settings),
        minibatch_size=6,
        failures_shown=3,
        seed=seed,
    )


EXAMPLES = [Example.from_doc(d) for d in sim.task_dataset(44, seed=1)]


class Harness:
    """One loop over the simulated task, recording every save."""

    def __init__(
        self,
        config: RunConfig,
        *,
        evaluator: SimEvaluator | None = None,
        meta: SimMeta | None = None,
        state: RunState | None = None,
        crash_at_save: int | None = None,
        selector: CandidateSelector | None = None,
        is_canceled: Callable[[], Any] | None = None,
        clock: Callable[[], float] | None = None,
        seeds: tuple[str, ...] = (sim.STARTING_PROMPT,),
    ) -> None:
        self.config = config
        self.evaluator = evaluator or SimEvaluator()
        self.meta = meta or SimMeta()
        self.saves: list[dict[str, Any]] = []
        # Work asked since the last save that persisted: all a crash may
        # make a resumed run ask again.
        self.unsaved_keys: set[Key] = set()
        self.unsaved_meta: set[str] = set()
        self._seen = (0, 0)
        self.crash_at_save = crash_at_save
        self.train, self.validation = split_dataset(
            EXAMPLES, config.split, config.seed
        )
        self.state = state or RunState.start(list(seeds))
        extra: dict[str, Any] = {}
        if clock is not None:
            extra["clock"] = clock
        self.loop = SearchLoop(
            config=config,
            state=self.state,
            train=self.train,
            validation=self.validation,
            evaluator=self.evaluator,
            proposer=MetaProposer(self.meta, config.meta_model),
            scorer_calls=0,
            save=self.save,
            is_canceled=is_canceled,
            selector=selector,
            **extra,
        )

    async def save(self, state: RunState) -> None:
        asked, prompted = len(self.evaluator.asked), len(self.meta.prompts)
        if self.crash_at_save == len(self.saves) + 1:
            self.unsaved_keys = set(self.evaluator.asked[self._seen[0] :])
            self.unsaved_meta = set(self.meta.prompts[self._seen[1] :])
            raise RuntimeError("crash")
        # A real store writes a copy: the run goes on changing the state.
        self.saves.append(copy.deepcopy(state.to_doc()))
        self._seen = (asked, prompted)

    async def run(self) -> RunState:
        return await self.loop.run()


def _true_accuracy(prompt: str) -> float:
    return sim.task_accuracy(prompt)


@pytest.mark.parametrize("selector", [None, BestSelector()])
async def test_the_search_beats_the_starting_prompt(
    selector: CandidateSelector | None,
) -> None:
    harness = Harness(_config(iterations=8), selector=selector)
    state = await harness.run()
    assert state.stop_reason == "iterations"
    assert state.iteration == 8
    assert state.baseline_id == "c0"
    best, baseline = state.best, state.candidate("c0")
    assert best is not None
    assert best.id != "c0"
    assert best.validation_score is not None
    assert baseline.validation_score is not None
    assert best.validation_score > baseline.validation_score
    assert _true_accuracy(best.prompt) > _true_accuracy(sim.STARTING_PROMPT)
    assert best.parents
    assert best.rationale
    assert len(state.history) == 8
    assert state.history[-1]["bestId"] == best.id
    assert state.history[-1]["bestScore"] == best.validation_score
    assert {c.id for c in state.candidates} == {
        f"c{i}" for i in range(len(state.candidates))
    }


async def test_control_task_keeps_the_baseline() -> None:
    harness = Harness(
        _config(iterations=6, patience=3),
        evaluator=SimEvaluator(sim.control_answer),
    )
    state = await harness.run()
    assert state.best_id == state.baseline_id == "c0"
    assert state.stop_reason == "no_improvement"
    assert state.iteration == 3
    assert state.no_improvement == 3
    # Proposed and screened, but never better than their parent.
    assert len(state.candidates) > 1
    assert all(not c.validated for c in state.candidates[1:])
    assert all(c.minibatch for c in state.candidates[1:])


async def test_spending_is_counted_and_batched() -> None:
    harness = Harness(_config(iterations=3))
    state = await harness.run()
    ev, meta = harness.evaluator, harness.meta
    assert state.calls == ev.calls + meta.calls
    assert state.cost == pytest.approx(
        ev.calls * TARGET_COST + meta.calls * META_COST
    )
    assert state.input_tokens == ev.calls * 20 + meta.calls * 300
    assert state.output_tokens == ev.calls * 5 + meta.calls * 80
    spending = state.spending()
    assert spending["calls"] == state.calls
    assert spending["discardedProposals"] == state.discarded_proposals
    # Seeds in one call; then per iteration: parent, children, validation.
    assert ev.batches[0] == 1
    assert meta.calls == 3


@pytest.mark.parametrize("max_calls", [19, 25, 53, 90, 150, 400])
async def test_the_call_budget_is_never_exceeded(max_calls: int) -> None:
    config = _config(iterations=30, patience=100, max_calls=max_calls)
    harness = Harness(config)
    state = await harness.run()
    spent = harness.evaluator.calls + harness.meta.calls
    assert spent == state.calls <= max_calls
    assert state.stop_reason == "max_calls"
    if max_calls < 20:  # not even the baseline fits
        assert state.calls == 0
        assert state.baseline_id is None


async def test_a_tight_budget_asks_for_fewer_candidates() -> None:
    # Seeds take 20 calls; one candidate plans 6*2 + 1 + 20 = 33 more.
    harness = Harness(_config(iterations=5, max_calls=53))
    state = await harness.run()
    assert [COUNT.findall(p) for p in harness.meta.prompts] == [["1"]]
    assert state.stop_reason == "max_calls"


async def test_the_cost_budget_stops_the_run() -> None:
    harness = Harness(_config(iterations=30, patience=100, max_cost=0.15))
    state = await harness.run()
    assert state.stop_reason == "max_cost"
    assert state.cost <= 0.15
    assert state.max_call_cost == META_COST


@pytest.mark.parametrize("bad", ["Sorry, no JSON today.", None, "{[}"])
async def test_an_unusable_meta_reply_is_counted_not_fatal(
    bad: str | None,
) -> None:
    replies = [bad]

    def reply(prompt: str) -> str | None:
        return replies.pop() if replies else sim.meta_answer(prompt)

    harness = Harness(_config(iterations=4), meta=SimMeta(reply))
    state = await harness.run()
    assert state.stop_reason == "iterations"
    assert state.history[0]["candidates"] == []
    assert state.discarded_proposals >= 3
    assert state.no_improvement == 0 or state.history[1]["candidates"]
    assert state.calls == harness.evaluator.calls + harness.meta.calls


async def test_errors_are_excluded_and_never_failures() -> None:
    failing = frozenset(e.id for e in EXAMPLES[::3])
    harness = Harness(
        _config(iterations=4), evaluator=SimEvaluator(failing=failing)
    )
    state = await harness.run()
    assert state.stop_reason == "iterations"
    failing_inputs = {e.inputs["input"] for e in EXAMPLES if e.id in failing}
    shown = [
        text
        for prompt in harness.meta.prompts
        for text in FAILURE_INPUT.findall(prompt)
    ]
    assert shown  # wrong answers were shown...
    assert not failing_inputs & set(shown)  # ...but never errors
    baseline = state.candidate("c0")
    assert baseline.validation is not None
    failing_validation = {e.id for e in harness.validation} & failing
    assert baseline.validation_errors == len(failing_validation)
    for candidate in state.candidates:
        for record in candidate.minibatch:
            assert not set(record["exampleIds"]) & failing


async def test_no_scored_seed_means_no_candidates() -> None:
    harness = Harness(
        _config(),
        evaluator=SimEvaluator(failing=frozenset(e.id for e in EXAMPLES)),
    )
    state = await harness.run()
    assert state.stop_reason == "no_candidates"
    assert state.baseline_id == "c0"
    assert harness.meta.calls == 0


async def test_the_best_seed_is_the_baseline() -> None:
    seeds = (sim.STARTING_PROMPT, sim.best_prompt(), sim.best_prompt() + " ")
    harness = Harness(_config(iterations=0), seeds=seeds)
    state = await harness.run()
    assert state.stop_reason == "iterations"
    assert state.baseline_id == state.best_id == "c1"  # tie: the first
    assert harness.evaluator.batches == [3]


async def test_cancel_stops_the_run() -> None:
    harness: Harness

    async def is_canceled() -> bool:
        return len(harness.meta.prompts) >= 2

    harness = Harness(_config(iterations=10), is_canceled=is_canceled)
    state = await harness.run()
    assert state.stop_reason == "canceled"
    assert state.iteration == 2
    assert harness.saves[-1]["stopReason"] == "canceled"


async def test_wall_clock_stops_the_run() -> None:
    harness: Harness

    def clock() -> float:
        return 10.0 * len(harness.evaluator.batches)

    harness = Harness(_config(iterations=10, max_wall_seconds=45), clock=clock)
    state = await harness.run()
    assert state.stop_reason == "wall_time"
    assert 0 < state.iteration < 10


async def test_the_same_seed_gives_the_same_run() -> None:
    first = await Harness(_config(seed=4)).run()
    again = await Harness(_config(seed=4)).run()
    other = await Harness(_config(seed=5)).run()
    assert first.to_doc() == again.to_doc()
    assert first.to_doc() != other.to_doc()


async def test_state_round_trips_through_json() -> None:
    harness = Harness(_config(iterations=3))
    await harness.run()
    docs = [*harness.saves, harness.state.to_doc()]
    assert any(doc["progress"] for doc in docs)
    for doc in docs:
        stored = json.loads(json.dumps(doc))
        assert RunState.from_doc(stored).to_doc() == doc


async def test_a_resumed_run_ends_as_an_uninterrupted_one() -> None:
    config = _config(iterations=4, candidates_per_iteration=2)
    whole = Harness(config)
    final = (await whole.run()).to_doc()
    assert len(whole.saves) == 1 + 4 * 4 + 1
    for crash in range(1, len(whole.saves) + 1):
        crashed = Harness(config, crash_at_save=crash)
        with pytest.raises(RuntimeError, match="crash"):
            await crashed.run()
        assert len(crashed.saves) == crash - 1
        snapshot = crashed.saves[-1] if crashed.saves else None
        resumed = Harness(
            config,
            evaluator=SimEvaluator(store=crashed.evaluator.store),
            meta=SimMeta(store=crashed.meta.store),
            state=None if snapshot is None else RunState.from_doc(snapshot),
        )
        assert (await resumed.run()).to_doc() == final, crash
        # Only the step cut short is asked again: no saved step repeats.
        repeated = set(resumed.evaluator.asked) - set(resumed.evaluator.fresh)
        assert repeated <= crashed.unsaved_keys, crash
        repeated_meta = set(resumed.meta.prompts) - set(resumed.meta.fresh)
        assert repeated_meta <= crashed.unsaved_meta, crash
        # Together they did the uninterrupted run's work, nothing more.
        assert set(resumed.evaluator.store) == set(whole.evaluator.store)


def test_paired_scores_compare_only_examples_scored_on_both_sides() -> None:
    parent = [
        Outcome("a", "1", 1.0),
        Outcome("b", "2", 0.0),
        Outcome("c", None, None, error="x"),
        Outcome("d", "4", 0.0),
    ]
    child = [
        Outcome("a", "1", 1.0),
        Outcome("b", "2", 1.0),
        Outcome("c", "3", 1.0),
        Outcome("d", None, None, error="y"),
    ]
    assert paired_scores(parent, child) == (1.0, 0.5, ["a", "b"])
    assert paired_scores(parent[2:3], child[2:3]) == (None, None, [])
