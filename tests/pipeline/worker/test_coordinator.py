import itertools

import pytest

from pipeline.worker.coordinator import LimitsCoordinator, water_fill


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _report(limit, demand, in_flight=0, enforced=0, rpm=None):
    return {
        "m": {
            "limits": {"maxConcurrency": limit, "rpm": rpm, "tpm": None},
            "demand": demand,
            "inFlight": in_flight,
            "enforced": enforced,
        }
    }


def test_water_fill_follows_demand_and_spreads_the_rest():
    assert water_fill(10, {"a": 3, "b": 100}) == {"a": 3, "b": 7}
    assert water_fill(10, {"a": 0, "b": 0}) == {"a": 5, "b": 5}
    assert water_fill(9, {"a": 100, "b": 100, "c": 100}) == {
        "a": 3,
        "b": 3,
        "c": 3,
    }
    assert water_fill(3, {"a": 1}) == {"a": 3}
    for capacity, demands in [
        (7, {"a": 2, "b": 9, "c": 0}),
        (1, {"a": 5, "b": 5}),
    ]:
        assert sum(water_fill(capacity, demands).values()) == capacity


def test_single_holder_gets_everything():
    coordinator = LimitsCoordinator()
    share = coordinator.sync("a", _report(32, 0))["m"]
    assert share["concurrency"] == 32


def test_growth_waits_until_others_shrink():
    clock = Clock()
    coordinator = LimitsCoordinator(clock=clock)
    assert coordinator.sync("a", _report(10, 100))["m"]["concurrency"] == 10
    # a works with all 10; b arrives with demand.
    a = 10
    b = coordinator.sync("b", _report(10, 100))["m"]["concurrency"]
    assert b == 0  # a may still run 10 calls
    a = coordinator.sync("a", _report(10, 100, in_flight=10, enforced=10))[
        "m"
    ]["concurrency"]
    assert a == 5  # told to shrink
    # a applied the smaller share but 8 calls still run
    b = coordinator.sync("b", _report(10, 100))["m"]["concurrency"]
    assert b == 0 or a + b <= 10
    coordinator.sync("a", _report(10, 100, in_flight=8, enforced=5))
    b = coordinator.sync("b", _report(10, 100))["m"]["concurrency"]
    assert b == 2  # only what a is not using
    coordinator.sync("a", _report(10, 100, in_flight=5, enforced=5))
    b = coordinator.sync("b", _report(10, 100, enforced=2))["m"]["concurrency"]
    assert b == 5


@pytest.mark.parametrize("seed", range(20))
def test_reserved_capacity_never_exceeds_the_limit(seed):
    """Random interleavings: what holders may run never exceeds 12."""
    import random

    rng = random.Random(seed)
    clock = Clock()
    coordinator = LimitsCoordinator(clock=clock)
    limit = 12
    holders = {name: {"share": 0, "in_flight": 0} for name in "abc"}
    for _ in range(300):
        name = rng.choice("abc")
        h = holders[name]
        # calls start up to the enforced share and finish at random
        h["in_flight"] = max(
            0, min(h["share"], h["in_flight"] + rng.randint(-3, 3))
        )
        answer = coordinator.sync(
            name,
            _report(limit, rng.randint(0, 20), h["in_flight"], h["share"]),
        )["m"]["concurrency"]
        h["share"] = answer
        h["in_flight"] = min(h["in_flight"], max(h["in_flight"], 0))
        possible = sum(
            max(x["share"], x["in_flight"]) for x in holders.values()
        )
        assert possible <= limit
        clock.now += 0.1


def test_dead_holders_are_forgotten():
    clock = Clock()
    coordinator = LimitsCoordinator(holder_ttl_s=5, clock=clock)
    coordinator.sync("a", _report(4, 10, enforced=0))
    coordinator.sync("a", _report(4, 10, in_flight=4, enforced=4))
    assert coordinator.sync("b", _report(4, 10))["m"]["concurrency"] == 0
    clock.now += 6
    assert coordinator.sync("b", _report(4, 10))["m"]["concurrency"] == 4


def test_a_restarted_coordinator_grows_nobody_at_first():
    clock = Clock()
    coordinator = LimitsCoordinator(
        restarted=True, holder_ttl_s=5, clock=clock
    )
    share = coordinator.sync("a", _report(8, 10, in_flight=2, enforced=3))
    assert share["m"]["concurrency"] == 3
    assert coordinator.sync("b", _report(8, 10))["m"]["concurrency"] == 0
    clock.now += 6
    coordinator.sync("b", _report(8, 10))
    shares = [
        coordinator.sync(n, _report(8, 10, enforced=e))["m"]["concurrency"]
        for n, e in itertools.islice(itertools.cycle([("a", 3), ("b", 0)]), 4)
    ]
    assert max(shares) <= 8


def _report_rates(demand, in_flight, enforced):
    return {
        "m": {
            "limits": {"maxConcurrency": 9, "rpm": 900, "tpm": 90_000},
            "demand": demand,
            "inFlight": in_flight,
            "enforced": enforced,
        }
    }


@pytest.mark.parametrize(
    ("demands", "fair_rpm"),
    [
        ({"a": 50, "b": 50, "c": 50}, {"a": 300, "b": 300, "c": 300}),
        ({"a": 1, "b": 50, "c": 50}, {"a": 100, "b": 400, "c": 400}),
    ],
)
def test_rates_are_split_with_concurrency(demands, fair_rpm):
    """Holders' rates add up to the model's at most, shared as demanded.

    Every holder uses at once the share it was given and reports it.
    """
    clock = Clock()
    coordinator = LimitsCoordinator(clock=clock)
    shares = {name: {"concurrency": 0, "rpm": 0, "tpm": 0} for name in demands}
    for _ in range(10):
        for name, demand in demands.items():
            used = shares[name]["concurrency"]
            shares[name] = coordinator.sync(
                name, _report_rates(demand, used, used)
            )["m"]
            assert sum(s["rpm"] for s in shares.values()) <= 900 + 1e-9
            assert sum(s["tpm"] for s in shares.values()) <= 90_000 + 1e-6
        clock.now += 0.5
    for name, share in shares.items():
        assert share["rpm"] == pytest.approx(fair_rpm[name])
        assert share["tpm"] == pytest.approx(fair_rpm[name] * 100)
        # A slot of concurrency carries a ninth of each rate.
        assert share["concurrency"] * 100 == pytest.approx(share["rpm"])


def test_odd_slots_take_turns():
    demands = {"a": 5, "b": 5}
    assert water_fill(1, demands, turn=0) == {"a": 1, "b": 0}
    assert water_fill(1, demands, turn=1) == {"a": 0, "b": 1}
    assert water_fill(3, demands, turn=1) == {"a": 1, "b": 2}


def test_a_starved_holder_gets_the_slot_in_its_turn():
    from pipeline.worker.coordinator import TURN_S

    clock = Clock()
    coordinator = LimitsCoordinator(clock=clock)
    got = {"a": 0, "b": 0}
    in_flight = {"a": 0, "b": 0}
    share = {"a": 0, "b": 0}
    for _ in range(200):
        for name in "ab":
            share[name] = coordinator.sync(
                name, _report(1, 10, in_flight[name], share[name])
            )["m"]["concurrency"]
            in_flight[name] = share[name]  # uses what it gets at once
            got[name] += share[name]
            assert sum(max(share[n], in_flight[n]) for n in "ab") <= 1
        clock.now += TURN_S / 4
    assert got["a"] > 40 and got["b"] > 40
