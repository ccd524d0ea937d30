import math

from pipeline.worker.limits import ModelLimiter, Share, TokenBucket


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_concurrency_is_bounded_by_the_share():
    limiter = ModelLimiter(Share(2))
    first = limiter.try_start(10)
    assert first and limiter.try_start(10)
    assert not limiter.try_start(10)
    assert math.isinf(limiter.start_delay(10))
    limiter.finish(first, 12)
    assert limiter.try_start(10)


def test_share_changes_apply_to_new_calls():
    limiter = ModelLimiter(Share(3))
    running = [limiter.try_start(1) for _ in range(3)]
    assert all(running)
    limiter.set_share(Share(1))
    limiter.finish(running[0], 1)
    assert not limiter.try_start(1)  # 2 running, share 1
    limiter.finish(running[1], 1)
    limiter.finish(running[2], 1)
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
    call = limiter.try_start(100)
    assert call
    assert not limiter.try_start(50)
    limiter.finish(call, 20)  # used far less: 80 come back
    assert limiter.try_start(50)


def test_a_failed_call_gives_its_whole_reservation_back():
    clock = Clock()
    limiter = ModelLimiter(Share(100, tpm=6000), clock=clock)  # 100/s
    clock.now = 1.0
    call = limiter.try_start(100)
    assert call and not limiter.try_start(50)
    limiter.finish(call, None)  # failed: the provider reported no usage
    assert limiter.try_start(100)


def test_no_reservation_holds_a_model_for_more_than_a_minute():
    clock = Clock()
    limiter = ModelLimiter(Share(100, tpm=600), clock=clock)  # 10/s
    clock.now = 1.0
    # A call asking for far more than the per-minute budget starts (it
    # could never fit otherwise) but reserves at most that budget.
    huge = limiter.try_start(1_000_000)
    assert huge and huge.tokens == 600
    assert limiter.start_delay(1) <= 60.0
    # What it really used is charged when it ends: 30 tokens, where 10
    # were there, so the next 10 wait 3 seconds.
    limiter.finish(huge, 30)
    assert limiter.start_delay(10) == 3.0
    clock.now += 3.0
    assert limiter.try_start(10)


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
