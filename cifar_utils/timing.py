"""Timing code the same way everywhere: warm up, then time each call; keep the best.

    seconds = timing.best_time(lambda: model.predict(x, verbose=0), repeats=3)
    images_per_second = len(x) / seconds

The first calls of a model pay for graph tracing, memory allocation and cold caches,
so they are run untimed first (`warmup`). Other work on the machine only ever slows a
call down, never speeds it up, so the fastest of several timed calls is the best
estimate of the code's own speed (`best_time`). `call_times` returns every call's
time, for a first-call/median/maximum report; `latencies_ms` times calls that each
take their index, for per-request latencies.

What a timed call returns is freed only after its timer stops, so freeing a large
result is never counted. Only the standard library, NumPy and `checks` are used.
"""

from __future__ import annotations

import time

import numpy as np

from cifar_utils import checks


def _timed_calls(fn_of_i, n: int, warmup: int) -> list:
    for i in range(warmup):
        fn_of_i(i)
    seconds = []
    for i in range(n):
        start = time.perf_counter()
        result = fn_of_i(i)
        seconds.append(time.perf_counter() - start)
        del result  # after the timer stopped: freeing a large result is not counted
    return seconds


def call_times(fn, repeats=3, warmup=1) -> list:
    """The time of each of several calls of `fn`, after untimed warm-up calls.

    Args:
        fn: a function called without arguments; what it returns is ignored.
        repeats: how many calls are timed. Defaults to 3.
        warmup: how many calls run first, untimed (graph tracing, allocation,
            cold caches). Defaults to 1; 0 times the very first call too.

    Returns:
        A list of `repeats` durations in seconds, in call order.

    Raises:
        ValueError: `repeats` is not a whole number of at least 1, or `warmup`
            is not one of at least 0.
    """
    repeats = checks.whole_number(repeats, "repeats", minimum=1)
    warmup = checks.whole_number(warmup, "warmup")
    return _timed_calls(lambda i: fn(), repeats, warmup)


def best_time(fn, repeats=3, warmup=1) -> float:
    """The time of the fastest of several calls of `fn`, after untimed warm-up calls.

    Args:
        fn: a function called without arguments; what it returns is ignored.
        repeats: how many calls are timed; the fastest is kept. Defaults to 3.
        warmup: how many calls run first, untimed. Defaults to 1.

    Returns:
        The shortest duration in seconds (a float).

    Raises:
        ValueError: `repeats` is not a whole number of at least 1, or `warmup`
            is not one of at least 0.
    """
    return min(call_times(fn, repeats=repeats, warmup=warmup))


def latencies_ms(fn_of_i, n, warmup=1) -> np.ndarray:
    """The latency of each of `n` calls `fn_of_i(i)`, after untimed warm-up calls.

    Args:
        fn_of_i: a function of the call's index, `i = 0, 1, ..., n - 1` (for
            example, to classify image `i`); what it returns is ignored.
        n: how many calls are timed.
        warmup: how many calls run first, untimed, as `fn_of_i(0)`,
            `fn_of_i(1)`, ... Defaults to 1.

    Returns:
        A float64 array of `n` durations in milliseconds, in call order.

    Raises:
        ValueError: `n` is not a whole number of at least 1, or `warmup` is
            not one of at least 0.
    """
    n = checks.whole_number(n, "n", minimum=1)
    warmup = checks.whole_number(warmup, "warmup")
    return np.asarray(_timed_calls(fn_of_i, n, warmup)) * 1000.0
