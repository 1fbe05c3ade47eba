"""The line compress prints when a pruned model will not get faster by what its MACs promise."""

import json

import pytest

from deploykit.bench.speedup_warning import efficiency, misaligned, speedup_warning
from deploykit.cli.main import main


def _report(macs: float, round_to: int = 8, latency: dict | None = None) -> dict:
    r = {"ratios": {"macs": macs}, "rounding": {"round_to": round_to}}
    if latency is not None:
        r["latency"] = latency
    return r


def test_efficiency_is_one_when_latency_falls_as_the_macs_do():
    assert efficiency(0.5, 0.5) == 1.0
    assert efficiency(0.5, 0.75) == 0.5
    assert efficiency(0.5, 1.014) < 0
    assert efficiency(1.0, 0.9) is None


def test_misaligned_counts_only_pruned_groups_that_left_a_multiple_of_8():
    # (full, kept): pruned off 8 | pruned on 8 | untouched odd | pruned, never a multiple
    assert misaligned([(64, 37), (64, 40), (37, 37), (30, 20)]) == (1, 3)


@pytest.mark.parametrize("latency, warned, words", [
    ({"predicted_ratio": 0.55}, False, ""),
    ({"predicted_ratio": 0.8}, True, "less than half the speedup"),  # efficiency 0.4
    ({"predicted_ratio": 0.6, "checks": [{"measured": 1.014}]}, True, "slower than the base"),  # the timing wins
])
def test_a_latency_ratio_decides_when_there_is_one(latency, warned, words):
    line = speedup_warning(_report(0.5, latency=latency), [(64, 37)] * 10)  # widths say nothing here
    assert (line is not None) == warned
    if warned:
        assert words in line and "--round-to 8" in line and "--normalize latency" in line and "\n" not in line


def test_without_a_latency_ratio_the_widths_decide():
    assert speedup_warning(_report(0.5, round_to=1), [(64, 37), (64, 41), (64, 40), (32, 16)]) is not None
    assert speedup_warning(_report(0.5), [(64, 40), (64, 48), (32, 16)]) is None
    assert speedup_warning(_report(1.0, round_to=1), [(64, 64)]) is None  # nothing pruned


@pytest.mark.parametrize("extra, warned", [([], False), (["--round-to", "1"], True)], ids=["default", "round-to-1"])
def test_compress_says_so_on_stderr(extra, warned, tmp_path, capsys, digits_model):
    args = ["compress", "digits:demo", "--target-macs", "0.5", "--criterion", "l1", "--out", str(tmp_path / "a"),
            "--json", str(tmp_path / "r.json"), *extra]
    assert main(args) == 0
    err = capsys.readouterr().err
    report = json.loads((tmp_path / "r.json").read_text())
    lines = [ln for ln in err.splitlines() if ln.startswith("warning: ")]
    assert bool(lines) == warned and report["warnings"] == lines
    if warned:
        assert "not multiples of 8 (--round-to 1)" in lines[0]
