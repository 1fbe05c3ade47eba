"""The cliff scan by bisection: the cliffs of a full scan, from fewer measured widths."""

from __future__ import annotations

from deploykit.bench.latency_table.fit import find_steps, ladder
from deploykit.bench.latency_table.profile import Profiler
from tests.bench import nets
from tests.bench.conftest import SPEC, fake_config


def full_scan(prof: Profiler, gi: int) -> tuple[list[int], list[float]]:
    """Every width of group ``gi``'s scan and its layers' total latency on the staircase backend."""
    widths = prof.scan_widths(gi)
    ms = []
    for width in widths:
        w = list(prof.full)
        w[gi] = width
        calls = [c for c in prof._calls if c.layer is not None and gi in {g for g, _ in c.in_groups + c.out_groups}]
        ms.append(sum(nets.stair_ms(c.call.op, *prof.dims(c, w)) for c in calls))
    return widths, ms


def test_bisection_finds_the_cliffs_and_ladder_of_a_full_scan_with_fewer_points(cost_model):
    prof = Profiler(cost_model, SPEC, fake_config("fake-stair", scan=32, cache=False))
    curves = prof.scan()
    fewer = 0
    for gi in prof.prunable:
        g = cost_model.groups[gi]
        widths, ms = full_scan(prof, gi)
        want = find_steps(widths, ms, unit=g.atom_size)
        got = curves[g.id]
        assert set(got.widths) <= set(widths) and {widths[0], widths[-1]} <= set(got.widths)
        assert (got.cliffs, got.period, got.offset) == (want.cliffs, want.period, want.offset), g.id
        assert got.ladder == ladder(want, prof.min_w[gi], prof.full[gi], unit=g.atom_size), g.id
        fewer += len(got.widths) < len(widths)
    assert fewer >= 1  # the staircase's flat stretches were not measured


def test_a_flat_curve_is_measured_at_its_two_ends_only(cost_model):
    prof = Profiler(cost_model, SPEC, fake_config("fake-flat", scan=32, cache=False))
    curves = prof.scan()
    for gi in prof.prunable:
        g = cost_model.groups[gi]
        assert curves[g.id].widths == [prof.scan_widths(gi)[0], prof.full[gi]]
        assert curves[g.id].cliffs == [prof.full[gi]]
