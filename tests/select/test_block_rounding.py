"""--round-to BLOCK:STEP: multiples of the block, or of the step below it."""

from __future__ import annotations

import json

import pytest

from deploykit.cli.main import main
from deploykit.compression import SelectionSettings
from deploykit.errors import DeployKitError
from deploykit.select.block_rounding import BlockRounding


def test_the_widths_are_multiples_of_the_block_or_of_the_step_below_it():
    rule = BlockRounding.parse("16:8")
    assert rule.widths(16) == [8, 16]
    assert rule.widths(64) == [8, 16, 32, 48, 64]
    assert rule.widths(40) == [8, 16, 32, 40]  # the full width always
    assert BlockRounding.parse("32:8").widths(64) == [8, 16, 24, 32, 64]
    assert str(rule) == "16:8"


@pytest.mark.parametrize("bad", ["16:7", "8:16", "16:16", "16:0", "a:b", "16:8:4"])
def test_a_bad_block_rule_is_one_clear_error(bad):
    with pytest.raises(DeployKitError, match=r"--round-to .*BLOCK:STEP"):
        SelectionSettings(targets={"macs": 0.5}, round_to=bad)


def test_compress_keeps_block_widths(tmp_path):
    out, rep = tmp_path / "r", tmp_path / "r.json"
    assert main(["compress", "cifar:resnet20", "--target-macs", "0.5", "--criterion", "l2", "--round-to", "16:8",
                 "--out", str(out), "--json", str(rep)]) == 0
    assert json.loads(rep.read_text())["rounding"]["round_to"] == "16:8"
    widths = {g["id"]: (g["channels"], len(g["kept"])) for g in json.loads((out / "plan.json").read_text())["groups"]}
    assert any(kept < full for full, kept in widths.values())
    for gid, (full, kept) in widths.items():
        assert kept == full or kept % 16 == 0 or kept == 8, (gid, kept)
    # the rule leaves 24, 40 and 56 out, where rounding to 8 can land
    assert not {kept for _, kept in widths.values()} & {24, 40, 56}
