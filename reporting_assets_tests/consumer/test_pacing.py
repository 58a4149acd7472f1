import pytest

from reporting_assets.consumer.pacing import AccountPacer, TokenBucket


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_token_bucket_paces_to_rate():
    clock = FakeClock()
    bucket = TokenBucket(rate=4.0, burst=1.0, clock=clock, sleep=clock.sleep)
    for _ in range(9):
        bucket.acquire()
    assert clock.now == pytest.approx(2.0)  # first call free, then 8 calls at 4/s


def test_burst_is_spent_first():
    clock = FakeClock()
    bucket = TokenBucket(rate=1.0, burst=3.0, clock=clock, sleep=clock.sleep)
    waits = [bucket.acquire() for _ in range(4)]
    assert waits[:3] == [0, 0, 0] and waits[3] == pytest.approx(1.0)


def test_pacer_keeps_accounts_apart_and_rejects_bad_rates():
    pacer = AccountPacer(qps_per_account=1000.0)
    pacer.acquire("a")
    assert pacer.acquire("b") == 0.0
    with pytest.raises(ValueError, match="qps_per_account"):
        AccountPacer(qps_per_account=-1)
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate=0)
