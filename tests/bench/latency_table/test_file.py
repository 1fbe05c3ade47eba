"""The latency table file: format, cache key, cache reuse, bad files."""

from __future__ import annotations

import json

import pytest
import torch

from deploykit.bench.latency_table import file as lutmod
from deploykit.bench.latency_table.file import Lut, cache_path, read_lut
from deploykit.bench.latency_table.profile import Profiler, load_or_profile
from deploykit.errors import DeployKitError
from deploykit.graph.costs import CostModel
from deploykit.graph.groups import ModelGraph
from tests.bench import nets
from tests.bench.conftest import SPEC, fake_config


def test_file_round_trips_and_holds_every_part(tmp_path, smooth_lut, cost_model):
    path = tmp_path / "lut.json"
    smooth_lut.save(path)
    doc = json.loads(path.read_text())
    assert doc["format"] == "deploykit-lut/1"
    assert {"backend", "device", "runtime", "precision", "batch", "threads", "model", "input_shape", "arch"} == set(doc["key"])
    assert {"layers", "groups", "calibration", "machine", "settings", "base_ms"} <= set(doc)
    # where the profile's time went: its three phases add up to the whole (each rounded to 0.1 s)
    assert set(doc["phases"]) == {"scan", "layers", "calibration"}
    assert abs(sum(doc["phases"].values()) - doc["seconds"]) <= 0.25
    # every conv/linear call has a table whose grids match its measured and fitted values
    assert set(doc["layers"]) == {"stem", "dw", "pw", "conv1", "conv2", "head"}
    for t in doc["layers"].values():
        rows = 1 if t["tied"] else len(t["cin"])
        assert len(t["ms"]) == len(t["fit"]) == rows and all(len(r) == len(t["cout"]) for r in t["ms"])
    assert doc["layers"]["dw"]["tied"] and not doc["layers"]["conv1"]["tied"]
    assert set(doc["groups"]) == {g.id for g in cost_model.graph.prunable()}
    assert read_lut(path) == smooth_lut


def test_cache_key_separates_every_setting(smooth_lut):
    key = smooth_lut.key
    name = key.file_name()
    assert name.startswith("tests.bench.nets_tiny-fake-fp32-b1-t1-") and name.endswith(".json")
    for field, other in [("backend", "ort"), ("device", "x"), ("runtime", "y"), ("precision", "fp16"), ("batch", 8),
                         ("threads", 2), ("arch", "z"), ("input_shape", [1, 3, 8, 8])]:
        assert key.model_copy(update={field: other}).file_name() != name


def test_a_cached_table_is_reused_without_measuring(cost_model):
    cfg = fake_config()
    nets.FakeTimer.layer_calls = 0
    first, src1 = load_or_profile(cost_model, SPEC, cfg)
    measured = nets.FakeTimer.layer_calls
    assert src1 == "measured" and measured > 0 and cache_path(first.key).is_file()
    second, src2 = load_or_profile(cost_model, SPEC, cfg)
    assert src2 == str(cache_path(first.key)) and nets.FakeTimer.layer_calls == measured and second == first
    # measuring the table again reads every single-layer point from the per-device point cache
    again, src3 = load_or_profile(cost_model, SPEC, cfg, refresh=True)
    assert src3 == "measured" and nets.FakeTimer.layer_calls == measured and again.layers == first.layers


def test_threads_batch_and_precision_are_part_of_the_key(cost_model):
    from deploykit.bench.latency_table.timers import TimingConfig

    a, _ = load_or_profile(cost_model, SPEC, fake_config())
    b, _ = load_or_profile(cost_model, SPEC, fake_config(timing=TimingConfig(threads=2)))
    assert a.key.threads == 1 and b.key.threads == 2 and cache_path(a.key) != cache_path(b.key)
    with pytest.raises(DeployKitError, match="precision 'int8' is not measured on backend fake; valid: fp32"):
        load_or_profile(cost_model, SPEC, fake_config(timing=TimingConfig(precision="int8")))


def test_bad_table_files_are_user_errors(tmp_path, smooth_lut, cost_model):
    with pytest.raises(DeployKitError, match="does not exist; make one with: deploykit profile"):
        read_lut(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DeployKitError, match="not valid JSON"):
        read_lut(bad)
    bad.write_text(json.dumps({"format": "deploykit-lut/1", "key": {}}))
    with pytest.raises(DeployKitError, match="not a deploykit latency table"):
        read_lut(bad)
    # a table of another architecture is refused by --lut
    other = smooth_lut.model_copy(update={"key": smooth_lut.key.model_copy(update={"arch": "0" * 16})})
    path = tmp_path / "other.json"
    other.save(path)
    with pytest.raises(DeployKitError, match="measured for another model architecture"):
        load_or_profile(cost_model, SPEC, fake_config(), lut_path=str(path))


def test_damaged_point_cache_is_only_slower(tmp_path):
    p = tmp_path / "points.json"
    p.write_text("[1, 2")
    cache = lutmod.PointCache(p)
    assert cache.points == {}
    cache.put("a|1|2", 0.5)
    cache.save()
    assert lutmod.PointCache(p).get("a|1|2") == 0.5
    assert isinstance(Lut.model_json_schema(), dict)


class _Grouped(torch.nn.Module):
    """A ResNeXt-like block: the grouped conv's whole groups go with its producer's channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.grouped = torch.nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.head = torch.nn.Conv2d(16, 8, 1)

    def forward(self, x):
        return self.head(torch.relu(self.grouped(torch.relu(self.stem(x)))))


def test_grouped_conv_layers_are_measured_as_valid_convolutions(monkeypatch):
    from deploykit.bench.latency_table.layers import torch_module

    seen = []

    def build_and_time(op, cin, cout):
        seen.append((cin, cout, op.groups(cin)))
        torch_module(op, cin, cout)  # torch refuses channels that the group count does not divide
        return nets.smooth_ms(op, cin, cout)

    monkeypatch.setattr(nets.FakeTimer, "fn", staticmethod(build_and_time))
    model = _Grouped().eval()
    x = torch.randn(1, 3, 16, 16)
    cm = CostModel(ModelGraph(model, x))
    Profiler(cm, "grouped", fake_config(scan=8, cache=False)).run()
    grouped = [(cin, cout, g) for cin, cout, g in seen if g > 1]
    assert any(cin < 16 for cin, _, _ in grouped), "the grouped conv was measured below its full width"
    assert all(cin == cout and cin % g == 0 and cin // g == 4 for cin, cout, g in grouped)
