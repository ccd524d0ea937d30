import random

from pipeline.backoff import backoff_s


def test_the_delay_doubles_up_to_its_cap():
    delays = [backoff_s(n, 0.1, cap_s=0.5) for n in range(1, 6)]
    assert delays == [0.1, 0.2, 0.4, 0.5, 0.5]


def test_jitter_draws_below_the_delay():
    rng = random.Random(7)
    delays = [backoff_s(3, 1.0, jitter=0.5, rng=rng) for _ in range(200)]
    assert all(2.0 < d <= 4.0 for d in delays)
    assert max(delays) - min(delays) > 1.0
