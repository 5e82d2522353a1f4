"""Interleaved timing shared by the benchmarks: ratios of times taken side by side.

On a machine shared with other work, absolute times drift by tens of percent within a
minute. Timing every runner once per round, back to back, and taking the median over
rounds of the *ratio* of two runners' times cancels most of that drift: both times of a
ratio were taken within milliseconds of each other, and the median discards the rounds
that other work disturbed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

__all__ = ["Times", "interleaved_times", "median_ms", "median_ratio"]

Times = dict[str, list[float]]
"""Per runner, the seconds per call measured in each round."""


def interleaved_times(
    bodies: dict[str, Callable[[], object]],
    rounds: int,
    reps: int,
    warmup: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> Times:
    """Time each body ``reps`` times per round, all bodies in every round.

    The bodies run in the given order in even rounds and in reverse order in odd rounds,
    so that none always follows (or precedes) the same other body.

    Arguments:
        bodies: The calls to time, by name; each runs the whole task once.
        rounds: The number of rounds.
        reps: Calls per body and round; the round's time is their mean.
        warmup: Untimed calls of each body first.
        clock: Seconds: wall time by default; ``time.process_time`` (CPU time of this
            process) is steadier where other jobs compete for the cores.

    Returns:
        Per body, its seconds per call in each round.
    """
    for body in bodies.values():
        for _ in range(warmup):
            body()
    times: Times = {name: [] for name in bodies}
    names = list(bodies)
    for round_index in range(rounds):
        for name in names[:: -1 if round_index % 2 else 1]:
            body = bodies[name]
            start = clock()
            for _ in range(reps):
                body()
            times[name].append((clock() - start) / reps)
    return times


def median_ratio(times: Times, numerator: str, denominator: str) -> float:
    """The median over rounds of ``time[numerator] / time[denominator]``."""
    return statistics.median(a / b for a, b in zip(times[numerator], times[denominator]))


def median_ms(times: Times, name: str) -> float:
    """The median over rounds of one body's time per call, in milliseconds."""
    return statistics.median(times[name]) * 1e3
