"""Optimizer benchmark: search quality, and one iteration's wall time.

Part 1 (in this process; no Ray, no database) runs the real
:class:`~optimizer.loop.SearchLoop` on the simulated arithmetic task of
:mod:`providers.fake.simulation`, whose true score of any prompt on a
held-out test set is known, for several seeds and the same call budget
per strategy:

* **metasync**: the default loop (4 candidates per iteration, minibatch
  of 8, Pareto parent, patience 3);
* **metasync-all**: the same without patience, so that it too spends
  the whole budget;
* **gepa-style**: GEPA's default reflective mutation, one proposal per
  iteration screened on a minibatch of 3 (``reflection_minibatch_size``)
  and validated when it beats its parent, no patience (GEPA stops at the
  budget only). The same loop runs it; what differs from GEPA itself:
  GEPA skips the proposal when the parent is perfect on the minibatch
  (``skip_perfect_score``; this loop proposes anyway and spends the
  screening calls), shows the meta model every minibatch example with
  feedback (this loop shows up to 4 failures and two other Pareto
  prompts), counts only target-model calls against its budget (this
  loop counts meta calls too: one per iteration) and returns the best
  on validation without a significance test. GEPA's reflection model
  also writes a new text each time, while here the scripted meta model
  answers a repeated meta prompt alike, and the loop drops a proposal
  whose prompt was ever proposed before (validated or not): a run whose
  every next step was once screened out stays where it is.

It prints the regret on the test set of the prompt each run recommends
(``summarize``: the best if significantly better, else the baseline),
the calls used, the calls needed until the best-so-far reaches 90% of
the possible test gain, and how often the control task (no prompt
changes the answers) wrongly recommends a new prompt.

Part 2 times one iteration's evaluation on the real stack: SecantusDB,
the fake provider (200 ms per call, a catalog limit of 64 in flight)
and a local Ray cluster; ``RayEvaluator.evaluate_all`` of 8 candidates
x 50 examples against the ideal ``ceil(400 / 64) x 0.2 s = 1.4 s``
(target: at most 1.2x), with the fake server's peak in-flight count
and the CPU each process spent. When the target is missed (or with
``--profile``) one more iteration runs with its phases timed: task
start, set-up, answer reads, worker calls, answer writes, and how full
the provider's 64 slots were.

Usage: ``python -m benchmarks.optimizer [--seeds N] [--skip-search]
[--skip-cluster] [--profile]`` (from the checkout's root).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks._stack import (
    LocalStack,
    cpu_by_process,
    machine_cpu_seconds,
)
from optimizer.answers import MemoryAnswerStore
from optimizer.calls import StoredModelCall
from optimizer.config import BudgetConfig, RunConfig, ScorerConfig
from optimizer.dataset import split_dataset
from optimizer.evaluate import CandidateEvaluation, LocalEvaluator
from optimizer.loop import SearchLoop
from optimizer.protocols import EvalRequest
from optimizer.records import Candidate, Example
from optimizer.report import summarize
from optimizer.scoring import build_scorer
from optimizer.state import RunState
from optimizer.strategies.proposal import MetaProposer
from providers.base import Completion, CompletionRequest, Usage
from providers.fake import simulation as sim

TARGET, META = "sim-target", "sim-meta"
#: Share of the possible test gain that counts as "reached".
GAIN_SHARE = 0.9


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--examples", type=int, default=60)
    parser.add_argument("--test-examples", type=int, default=200)
    parser.add_argument("--max-calls", type=int, default=1500)
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--skip-cluster", action="store_true")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="time the phases of an iteration even when on target",
    )
    return parser.parse_args()


# Part 1: search quality -----------------------------------------------


@dataclass(frozen=True)
class Strategy:
    """A way to configure the loop, compared at the same budget."""

    name: str
    candidates_per_iteration: int
    minibatch_size: int
    patience: int


STRATEGIES = (
    Strategy("metasync", 4, 8, BudgetConfig().patience),
    # The same without patience: spends the whole budget, as GEPA does.
    Strategy("metasync-all", 4, 8, 1000),
    # Patience as large as the iterations: GEPA stops at the budget only.
    Strategy("gepa-style", 1, 3, 1000),
)


class SimulatedModels:
    """``complete`` answering as the fake server's simulated models do.

    The target answers with ``answer`` (the task or the control), the
    meta model with the scripted :func:`~simulation.meta_answer`.
    """

    def __init__(self, answer: Callable[[str, str], str]) -> None:
        self._answer = answer
        self.fresh = 0

    async def __call__(
        self, model: str, request: CompletionRequest
    ) -> Completion:
        self.fresh += 1
        system = request.system_prompt or ""
        user = request.conversation[-1].content
        if model == META:
            text = sim.meta_answer(f"{system}\n\n{user}" if system else user)
        else:
            text = self._answer(system, user)
        words = len(system.split()) + len(user.split())
        return Completion(
            text, "stop", Usage(words, len(text.split())), model, 0.0
        )


@dataclass
class SearchResult:
    """One run of one strategy on one seed."""

    regret: float
    calls: int
    fresh: int
    to_gain: int | None  # calls until 90% of the gain; None: never
    recommended_new: bool
    gain: float
    discarded: int
    trace: list[tuple[int, float]] = field(default_factory=list)


class TrueScores:
    """True exact-match rates on the test set, computed once per prompt."""

    def __init__(self, test: Sequence[dict[str, Any]]) -> None:
        self._test = test
        self._known: dict[str, float] = {}

    def __call__(self, prompt: str) -> float:
        if prompt not in self._known:
            self._known[prompt] = sim.exact_match_rate(prompt, self._test)
        return self._known[prompt]


async def _search(
    strategy: Strategy,
    seed: int,
    answer: Callable[[str, str], str],
    args: argparse.Namespace,
) -> SearchResult:
    rows = sim.task_dataset(args.examples + args.test_examples, seed=seed)
    data, test = rows[: args.examples], rows[args.examples :]
    score = TrueScores(test)
    config = RunConfig(
        target_model=TARGET,
        meta_model=META,
        scorer=ScorerConfig(kind="exact"),
        budget=BudgetConfig(
            iterations=1000,
            candidates_per_iteration=strategy.candidates_per_iteration,
            max_calls=args.max_calls,
            patience=strategy.patience,
        ),
        minibatch_size=strategy.minibatch_size,
        seed=seed,
    )
    examples = [Example.from_doc(row) for row in data]
    train, validation = split_dataset(examples, config.split, config.seed)
    models = SimulatedModels(answer)
    call = StoredModelCall(
        f"bench-{seed}", MemoryAnswerStore(), models, pricing={}
    )
    scorer = build_scorer(config.scorer)
    evaluator = LocalEvaluator(CandidateEvaluation(config, call, scorer))
    trace: list[tuple[int, float]] = []

    async def save(state: RunState) -> None:
        best = state.best
        if best is not None:
            trace.append((state.calls, score(best.prompt)))

    state = RunState.start([sim.STARTING_PROMPT])
    loop = SearchLoop(
        config=config,
        state=state,
        train=train,
        validation=validation,
        evaluator=evaluator,
        proposer=MetaProposer(call, META),
        scorer_calls=scorer.model_calls,
        save=save,
    )
    state = await loop.run()
    assert state.baseline_id is not None, state.stop_reason
    summary = summarize(state.candidates, state.baseline_id, seed=seed)
    new = summary["recommendation"] == "best"
    baseline = state.candidate(state.baseline_id).prompt
    returned = summary["bestPrompt"] if new else baseline
    start, top = score(sim.STARTING_PROMPT), score(sim.best_prompt())
    gain = top - start
    goal = start + GAIN_SHARE * gain
    to_gain = next((c for c, s in trace if gain > 0 and s >= goal), None)
    return SearchResult(
        regret=top - score(returned),
        calls=state.calls,
        fresh=models.fresh,
        to_gain=to_gain,
        recommended_new=new,
        gain=gain,
        discarded=state.discarded_proposals,
        trace=trace,
    )


def _spread(values: Sequence[float], fmt: str = "{:.0f}") -> str:
    """``median [min, max]``; infinity reads ``never``."""

    def show(value: float) -> str:
        return "never" if math.isinf(value) else fmt.format(value)

    return (
        f"{show(statistics.median(values))} "
        f"[{show(min(values))}, {show(max(values))}]"
    )


def search_quality(args: argparse.Namespace) -> None:
    """Part 1: print each strategy's figures over the seeds."""
    seeds = range(args.seeds)
    started = time.monotonic()
    print(
        f"== search quality: simulated task, {args.seeds} seeds, "
        f"{args.examples} train+validation examples (half each) and "
        f"{args.test_examples} held-out test examples, maxCalls "
        f"{args.max_calls} =="
    )
    gains = None
    for strategy in STRATEGIES:
        results = [
            asyncio.run(_search(strategy, s, sim.task_answer, args))
            for s in seeds
        ]
        gains = gains or [r.gain for r in results]
        reached = [r for r in results if r.to_gain is not None]
        to_gain = [
            math.inf if r.to_gain is None else float(r.to_gain)
            for r in results
        ]
        print(
            f"{strategy.name:<12} ({strategy.candidates_per_iteration}/iter, "
            f"minibatch {strategy.minibatch_size}, patience "
            f"{strategy.patience}): regret "
            f"{_spread([r.regret for r in results], '{:.3f}')}; calls used "
            f"{_spread([r.calls for r in results])} (provider calls "
            f"{_spread([r.fresh for r in results])}); calls to "
            f"{GAIN_SHARE:.0%} of gain {_spread(to_gain)} (reached "
            f"{len(reached)}/{len(results)}); recommended a new prompt "
            f"{sum(r.recommended_new for r in results)}/{len(results)}; "
            f"discarded proposals {_spread([r.discarded for r in results])}"
        )
    if gains:
        print(
            f"possible test gain (best prompt - starting prompt): "
            f"{_spread(gains, '{:.3f}')}"
        )
    for strategy in STRATEGIES:
        control = [
            asyncio.run(_search(strategy, s, sim.control_answer, args))
            for s in seeds
        ]
        wrong = sum(r.recommended_new for r in control)
        print(
            f"control task, {strategy.name}: recommended a non-baseline "
            f"prompt {wrong}/{len(control)} times (must be 0); calls used "
            f"{_spread([r.calls for r in control])}"
        )
    print(f"search part took {time.monotonic() - started:.1f} s")


# Part 2: one iteration on the real stack -----------------------------


def cluster_iteration(args: argparse.Namespace) -> None:
    """Part 2: time ``RayEvaluator.evaluate_all`` on the local stack."""
    print(
        f"== one iteration on the real stack: {args.candidates} candidates "
        f"x {args.batch} examples, {args.latency_ms:.0f} ms per call, "
        f"maxConcurrency {args.concurrency} =="
    )
    started = time.monotonic()
    stack = LocalStack(num_cpus=2).start()
    print(
        f"stack (database, fake provider, Ray) up in "
        f"{time.monotonic() - started:.1f} s"
    )
    try:
        asyncio.run(_time_iterations(stack, args))
    finally:
        stopping = time.monotonic()
        stack.close()
        print(f"stack stopped in {time.monotonic() - stopping:.1f} s")


async def _time_iterations(stack: Any, args: argparse.Namespace) -> None:
    from optimizer.cluster import RayEvaluator, RunModels
    from pipeline.catalog import Limits, ModelCatalog, ModelSpec, Pricing
    from pipeline.store import Store, create_mongo_client
    from providers.fake import fake_model_config

    model = "bench-task"
    fake = stack.fake
    fake.configure({model: {"simulate": "task", "latencyMs": args.latency_ms}})
    store = Store(create_mongo_client(stack.mongo_uri), stack.db_name)
    try:
        await store.ensure_indexes()
        await ModelCatalog(store).create(
            ModelSpec(
                name=model,
                provider="openai",
                config=fake_model_config(
                    "openai", model, fake.url, timeoutSeconds=60
                ),
                limits=Limits(max_concurrency=args.concurrency),
            ),
            actor="bench",
        )
    finally:
        await store.close()
    config = RunConfig(target_model=model, meta_model=model)
    evaluator = RayEvaluator(
        "bench-run", config, RunModels({model: "openai"}, {model: Pricing()})
    )
    examples = tuple(
        Example.from_doc(row) for row in sim.task_dataset(args.batch, seed=7)
    )
    calls = args.candidates * args.batch
    ideal = math.ceil(calls / args.concurrency) * args.latency_ms / 1000

    async def iteration(label: str) -> tuple[float, int]:
        fake.reset()
        requests = [
            EvalRequest(
                Candidate(
                    id=f"{label}-{i}",
                    prompt=f"{sim.STARTING_PROMPT} ({label}, variant {i})",
                ),
                examples,
            )
            for i in range(args.candidates)
        ]
        began = time.monotonic()
        results = await evaluator.evaluate_all(requests)
        elapsed = time.monotonic() - began
        outcomes = [o for r in results for o in r]
        errors = [o.error for o in outcomes if o.error is not None]
        assert len(outcomes) == calls, len(outcomes)
        assert not errors, errors[:3]
        stats = fake.stats(model)
        assert stats["requests"] == calls, stats
        return elapsed, int(stats["maxInFlight"])

    cold, cold_peak = await iteration("cold")
    print(
        f"cold (first Ray tasks, worker actor start): {cold:.2f} s, max in "
        f"flight {cold_peak}"
    )
    timings, peaks = [], [cold_peak]
    cpu_before, machine_before = cpu_by_process(), machine_cpu_seconds()
    for rep in range(args.repetitions):
        elapsed, peak = await iteration(f"rep{rep}")
        timings.append(elapsed)
        peaks.append(peak)
        print(f"repetition {rep + 1}: {elapsed:.2f} s, max in flight {peak}")
    await _print_cpu(
        cpu_before,
        machine_before,
        stack,
        args.repetitions,
        sum(timings),
        calls,
    )
    median = statistics.median(timings)
    ratio = median / ideal
    print(
        f"iteration of {calls} calls: ideal {ideal:.2f} s; measured median "
        f"{median:.2f} s; ratio {ratio:.2f} (target <= 1.2); "
        f"fake server max in flight {max(peaks)} "
        f"(limit {args.concurrency})"
    )
    if ratio > 1.2 or args.profile:
        await _profile(evaluator, examples, fake, model, args)


async def _print_cpu(
    before: dict[int, tuple[str, float]],
    machine_before: float,
    stack: Any,
    repetitions: int,
    wall: float,
    calls: int,
) -> None:
    """CPU seconds per iteration, by process, during the repetitions."""
    if not before:
        return
    from pipeline.cluster.builder import worker_handle
    from pipeline.settings import Settings

    settings = Settings.from_env(generate_dev_secrets=False)
    stats = await worker_handle(settings, "openai", 0).stats.remote()
    after, machine = cpu_by_process(), machine_cpu_seconds()
    groups: dict[str, float] = {}
    for pid, (name, seconds) in after.items():
        spent = seconds - before.get(pid, (name, 0.0))[1]
        if pid == os.getpid():
            label = "driver + SecantusDB"
        elif pid == stats["pid"]:
            label = "worker actor"
        elif pid == stack.fake.pid:
            label = "fake provider"
        elif name in ("ray::IDLE", "ray::evaluate_task"):
            label = "evaluation tasks"
        else:
            label = "Ray daemons"
        groups[label] = groups.get(label, 0.0) + spent
    ours = sum(groups.values())
    rest = machine - machine_before - ours
    shown = ", ".join(
        f"{label} {seconds / repetitions:.2f}"
        for label, seconds in sorted(groups.items(), key=lambda g: -g[1])
    )
    cores = os.cpu_count() or 1
    print(
        f"CPU seconds per iteration: {shown}; total "
        f"{ours / repetitions:.2f}; other processes on the machine "
        f"{max(rest, 0.0) / repetitions:.2f}; capacity {cores} cores x "
        f"{wall / repetitions:.2f} s = {cores * wall / repetitions:.2f}"
    )
    actor = groups.get("worker actor", 0.0) / repetitions
    print(
        f"worker actor: {actor / calls * 1000:.1f} ms of CPU per call, all "
        f"on one event loop: {actor:.2f} s of each iteration"
    )


async def _profile(
    evaluator: Any,
    examples: tuple[Example, ...],
    fake: Any,
    model: str,
    args: argparse.Namespace,
) -> None:
    """One more iteration with timed phases: where does the time go?

    The tasks run :func:`optimizer.cluster._evaluate_chunk` itself, with
    the answer store's reads and writes and the worker calls wrapped in
    timers, in the same Ray worker processes as the measured runs.
    """
    import ray
    import ray.cloudpickle

    if __name__ != "__main__":
        # Ship the task's code by value: the workers need not import it
        # (``__main__`` always goes by value).
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    task = ray.remote(num_cpus=0)(_profiled_chunk)
    fake.reset()
    began = time.time()
    refs = [
        task.remote(
            time.time(),
            "bench-run",
            evaluator._config,
            evaluator._models,
            None,
            Candidate(
                id=f"profile-{i}",
                prompt=f"{sim.STARTING_PROMPT} (profile, variant {i})",
            ),
            examples,
        )
        for i in range(args.candidates)
    ]
    done: list[tuple[float, dict[str, Any]]] = []
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        received = time.time()
        for ref in ready:
            _, marks = await ref
            done.append((received, marks))
    total = time.time() - began
    arrivals = sorted(fake.stats(model).get("timestamps", []))
    latency = args.latency_ms / 1000

    def spread(values: Sequence[float]) -> str:
        ms = [v * 1000 for v in values]
        return f"median {statistics.median(ms):.0f} ms, max {max(ms):.0f} ms"

    tasks = [marks for _, marks in done]
    print(f"profile: one more iteration, {total:.2f} s end to end")
    print(
        "  task start (submitted -> running in its process): "
        + spread([m["started"] - m["submitted"] for m in tasks])
    )
    print(
        "  import + settings + clients (running -> first answer read): "
        + spread([m["spans"]["read"][0][0] - m["started"] for m in tasks])
    )
    reads = [e - s for m in tasks for s, e in m["spans"]["read"]]
    calls = [e - s for m in tasks for s, e in m["spans"]["call"]]
    writes = [e - s for m in tasks for s, e in m["spans"]["write"]]
    print(f"  answer read per example (find by _id): {spread(reads)}")
    print(
        f"  worker call per example (actor + limiter wait + {latency:.1f} s "
        f"provider): {spread(calls)}"
    )
    print(f"  answer write per example (insert_one): {spread(writes)}")
    print(
        "  last write -> task returns (client close): "
        + spread([m["ended"] - m["spans"]["write"][-1][1] for m in tasks])
    )
    print(
        "  task returns -> driver has it: "
        + spread([r - m["ended"] for r, m in done])
    )
    if arrivals:
        first, last = arrivals[0] - began, arrivals[-1] - began
        window = last + latency - first
        # Bursts: requests that reach the provider less than 50 ms apart.
        starts = [arrivals[0]] + [
            b for a, b in itertools.pairwise(arrivals) if b - a > 0.05
        ]
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        period = f"{statistics.median(gaps) * 1000:.0f} ms" if gaps else "-"
        print(
            f"  provider: first request at +{first:.2f} s, last answer at "
            f"+{last + latency:.2f} s of {total:.2f} s; mean in flight "
            f"{len(arrivals) * latency / window:.0f} of {args.concurrency} "
            f"over that window; {len(starts)} bursts, median period "
            f"{period} (ideal {latency * 1000:.0f} ms)"
        )


def _profiled_chunk(
    submitted: float, *args: Any
) -> tuple[list[Any], dict[str, Any]]:
    """``_evaluate_chunk`` with its reads, calls and writes timed."""
    started = time.time()
    from optimizer import cluster

    spans: dict[str, list[tuple[float, float]]] = {
        "read": [],
        "call": [],
        "write": [],
    }

    def timed(name: str, method: Any) -> Any:
        async def wrapper(*a: Any, **k: Any) -> Any:
            begun = time.time()
            try:
                return await method(*a, **k)
            finally:
                spans[name].append((begun, time.time()))

        return wrapper

    patched = [
        (cluster.MongoAnswerStore, "get_many", "read"),
        (cluster.MongoAnswerStore, "put", "write"),
        (cluster.WorkerHandles, "complete", "call"),
    ]
    originals = [
        (owner, attr, getattr(owner, attr)) for owner, attr, _ in patched
    ]
    for owner, attr, name in patched:
        setattr(owner, attr, timed(name, getattr(owner, attr)))
    try:
        outcomes = asyncio.run(cluster._evaluate_chunk(*args))
    finally:
        for owner, attr, original in originals:
            setattr(owner, attr, original)
    marks = {
        "submitted": submitted,
        "started": started,
        "ended": time.time(),
        "spans": spans,
    }
    return outcomes, marks


def main() -> None:
    args = _parse()
    started = time.monotonic()
    if not args.skip_search:
        search_quality(args)
    if not args.skip_cluster:
        cluster_iteration(args)
    print(f"total {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
