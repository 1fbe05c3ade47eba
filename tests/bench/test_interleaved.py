"""Interleaved timing: the order of calls (no wall-clock thresholds)."""

import pytest

from deploykit.bench.latency import interleaved


@pytest.mark.parametrize("rewarm, round_", [(True, ["a", "a", "b", "b"]), (False, ["a", "b"])])
def test_every_timed_call_follows_a_warm_call_of_the_same_model(rewarm, round_):
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("a", "b")}
    times = interleaved(fns, runs=3, warmup=1, rewarm=rewarm)
    assert calls[:2] == ["a", "b"]  # warm-up round
    assert calls[2:] == round_ * 3  # then the models alternate, each timed call right after its own warm call
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
