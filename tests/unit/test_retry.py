"""The one retry policy: delay sequence, cap, jitter bounds, attempts, and each use's defaults."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from dicom_node.config import Destination, Webhook, load_settings
from dicom_node.retry import RetryPolicy


def test_without_jitter_the_delay_doubles_from_the_base():
    policy = RetryPolicy(base_s=30, jitter=0, max_attempts=10)
    assert [policy.delay(n) for n in range(1, 6)] == [30.0, 60.0, 120.0, 240.0, 480.0]


def test_the_factor_sets_the_growth():
    policy = RetryPolicy(base_s=1, factor=3, jitter=0)
    assert [policy.delay(n) for n in (1, 2, 3)] == [1.0, 3.0, 9.0]


def test_the_cap_bounds_every_delay_even_far_out():
    policy = RetryPolicy(base_s=5, cap_s=600, jitter=0, max_attempts=10_000)
    assert [policy.delay(n) for n in (7, 8, 9)] == [320.0, 600.0, 600.0]
    assert policy.delay(5000) == 600.0  # 2**4999 overflows a float: the cap still applies
    assert RetryPolicy(base_s=1, jitter=0).delay(5000) == math.inf  # no cap: unbounded


@pytest.mark.parametrize("jitter", [0.25, 0.5, 1.0])
def test_jitter_stays_within_its_fraction_below_the_ceiling(jitter):
    policy = RetryPolicy(base_s=5, cap_s=60, jitter=jitter)
    rng = random.Random(7)
    for attempt, ceiling in [(1, 5), (2, 10), (3, 20), (5, 60), (12, 60)]:
        values = [policy.delay(attempt, rng) for _ in range(500)]
        assert all((1 - jitter) * ceiling <= v <= ceiling for v in values), (attempt, jitter)
        # The jitter is used: the values spread over most of the allowed band.
        assert max(values) - min(values) > 0.8 * jitter * ceiling


def test_a_seeded_rng_gives_the_same_delays():
    policy = RetryPolicy(base_s=2, cap_s=100)
    first = [policy.delay(n, random.Random(3)) for n in range(1, 6)]
    assert first == [policy.delay(n, random.Random(3)) for n in range(1, 6)]


def test_max_attempts_counts_the_first_attempt():
    policy = RetryPolicy(base_s=1, max_attempts=3)
    assert [policy.exhausted(n) for n in (0, 1, 2, 3, 4)] == [False, False, False, True, True]


def test_next_attempt_at_adds_the_delay_to_an_aware_time():
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    policy = RetryPolicy(base_s=10, jitter=0)
    assert policy.next_attempt_at(now, 3) == now + timedelta(seconds=40)
    with pytest.raises(ValueError, match="timezone-aware"):
        policy.next_attempt_at(now.replace(tzinfo=None), 1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_s": -1},
        {"base_s": 1, "factor": 0.5},
        {"base_s": 1, "cap_s": -1},
        {"base_s": 1, "jitter": 1.5},
        {"base_s": 1, "jitter": -0.1},
        {"base_s": 1, "max_attempts": 0},
        {"base_s": math.nan},
    ],
)
def test_out_of_range_parameters_are_refused(kwargs):
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_attempts_start_at_one():
    with pytest.raises(ValueError, match="starts at 1"):
        RetryPolicy(base_s=1).delay(0)


def test_each_use_keeps_its_configured_base_cap_and_attempts():
    """Defaults per use (docs/reliability.md "Retries"); only cap and jitter became uniform."""
    settings = load_settings()
    jobs = settings.workers.retry_policy()
    assert (jobs.base_s, jobs.cap_s, jobs.jitter, jobs.max_attempts) == (30.0, 600.0, 0.5, 3)
    delivery = Destination(name="p", ae_title="P", host="h", port=1).retry_policy()
    assert (delivery.base_s, delivery.cap_s, delivery.jitter, delivery.max_attempts) == (
        5.0, 600.0, 0.5, 10)  # fmt: skip
    hook = Webhook(name="w", url="http://127.0.0.1/").retry_policy()
    assert (hook.base_s, hook.cap_s, hook.jitter, hook.max_attempts) == (1.0, 30.0, 0.5, 5)
    assert all(p.factor == 2.0 for p in (jobs, delivery, hook))


def test_the_policy_keys_are_read_from_the_settings():
    settings = load_settings(
        overrides={
            "workers": {"retry_backoff_s": 2, "retry_backoff_max_s": 8, "retry_jitter": 0},
            "notifications": {
                "webhooks": [{"name": "w", "url": "http://127.0.0.1/", "backoff_jitter": 0,
                              "backoff_initial_s": 3, "backoff_max_s": 5, "max_attempts": 2}]
            },
        }
    )  # fmt: skip
    jobs = settings.workers.retry_policy()
    assert [jobs.delay(n) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 8.0]
    hook = settings.notifications.webhooks[0].retry_policy()
    assert [hook.delay(n) for n in (1, 2)] == [3.0, 5.0] and hook.exhausted(2)
