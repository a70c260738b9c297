"""The one timing helper: warm-up calls are not timed, the best call is kept, bad counts refused."""

import time

import numpy as np
import pytest

from cifar_utils import timing


def slow_first_call(first_s=0.2, then_s=0.0):
    """A function that sleeps `first_s` on its first call and `then_s` afterwards."""
    calls = []

    def fn(*args):
        calls.append(args)
        time.sleep(first_s if len(calls) == 1 else then_s)

    return fn, calls


def test_warm_up_calls_are_not_timed():
    fn, calls = slow_first_call(first_s=0.3)
    times = timing.call_times(fn, repeats=2, warmup=1)
    assert len(calls) == 3 and len(times) == 2
    assert max(times) < 0.1  # the 0.3 s first call was the untimed warm-up
    fn, calls = slow_first_call(first_s=0.3)
    assert timing.call_times(fn, repeats=2, warmup=0)[0] >= 0.3  # without one, it is timed


def test_best_time_is_the_fastest_call():
    durations = iter([0.3, 0.02, 0.2])
    best = timing.best_time(lambda: time.sleep(next(durations)), repeats=3, warmup=0)
    assert 0.02 <= best < 0.15  # the second call; the first and last took 0.3 and 0.2 s


def test_call_times_are_in_call_order():
    durations = iter([0.0, 0.1, 0.0])
    times = timing.call_times(lambda: time.sleep(next(durations)), repeats=3, warmup=0)
    assert times[1] >= 0.1 and times[0] < 0.05 and times[2] < 0.05


def test_freeing_the_result_is_not_timed():
    class SlowToFree:
        def __del__(self):
            time.sleep(0.2)

    assert timing.best_time(SlowToFree, repeats=1, warmup=0) < 0.1


def test_latencies_pass_the_index_and_skip_the_warm_up():
    fn, calls = slow_first_call(first_s=0.3)
    ms = timing.latencies_ms(fn, 4, warmup=1)
    assert isinstance(ms, np.ndarray) and ms.shape == (4,)
    assert calls == [(0,), (0,), (1,), (2,), (3,)]  # warm-up fn(0), then fn(0) ... fn(3)
    assert ms.max() < 100  # milliseconds; the 300 ms call was the warm-up
    slow = timing.latencies_ms(lambda i: time.sleep(0.05 * i), 2, warmup=0)
    assert slow[0] < 40 and slow[1] >= 50


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"repeats": 0}, "repeats must be a whole number.*received 0"),
        ({"repeats": 2.5}, "repeats must be a whole number.*received 2.5"),
        ({"repeats": True}, "repeats .* received True"),
        ({"warmup": -1}, "warmup must be a whole number.*received -1"),
    ],
)
def test_bad_counts_say_what_was_received(kwargs, message):
    calls = []
    for helper in (timing.best_time, timing.call_times):
        with pytest.raises(ValueError, match=message):
            helper(lambda: calls.append(1), **kwargs)
    assert not calls  # refused before anything ran
    with pytest.raises(ValueError, match="n must be a whole number.*received 0"):
        timing.latencies_ms(lambda i: None, 0)
