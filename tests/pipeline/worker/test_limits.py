import math

from pipeline.worker.limits import ModelLimiter, Share, TokenBucket


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_concurrency_is_bounded_by_the_share():
    limiter = ModelLimiter(Share(2))
    assert limiter.try_start(10) and limiter.try_start(10)
    assert not limiter.try_start(10)
    assert math.isinf(limiter.start_delay(10))
    limiter.finish(10, 12)
    assert limiter.try_start(10)


def test_share_changes_apply_to_new_calls():
    limiter = ModelLimiter(Share(3))
    for _ in range(3):
        assert limiter.try_start(1)
    limiter.set_share(Share(1))
    limiter.finish(1, 1)
    assert not limiter.try_start(1)  # 2 running, share 1
    limiter.finish(1, 1)
    limiter.finish(1, 1)
    assert limiter.try_start(1)


def test_rpm_paces_calls():
    clock = Clock()
    limiter = ModelLimiter(Share(100, rpm=60), clock=clock)
    clock.now = 1.0  # one second of refill = one request
    assert limiter.try_start(1)
    assert not limiter.try_start(1)
    assert 0.9 <= limiter.start_delay(1) <= 1.0
    clock.now = 2.0
    assert limiter.try_start(1)


def test_tpm_charges_estimates_and_corrects_them():
    clock = Clock()
    limiter = ModelLimiter(Share(100, tpm=6000), clock=clock)  # 100/s
    clock.now = 1.0
    assert limiter.try_start(100)
    assert not limiter.try_start(50)
    limiter.finish(100, 20)  # used far less: 80 come back
    assert limiter.try_start(50)


def test_rate_limit_halves_then_recovers():
    clock = Clock()
    limiter = ModelLimiter(Share(16), clock=clock)
    for _ in range(16):
        limiter.try_start(1)
    limiter.rate_limited()
    assert limiter.capacity == 8 and limiter.throttled
    limiter.rate_limited()
    assert limiter.capacity == 4
    clock.now += 2.0 * 3
    assert limiter.capacity == 7
    clock.now += 2.0 * 20
    assert limiter.capacity == 16 and not limiter.throttled


def test_token_bucket_burst_is_one_second():
    clock = Clock()
    bucket = TokenBucket(600, clock)  # 10/s
    clock.now = 100
    assert bucket.wait_time(10) == 0
    assert bucket.wait_time(11) == 0  # capped: waits for a full bucket
    bucket.take(10)
    assert bucket.wait_time(1) == 0.1
