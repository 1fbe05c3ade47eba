"""Pruned variants for calibration: the original model is left as it was, and no weight is copied."""

from __future__ import annotations

import torch

from deploykit.bench.latency_table.variants import prune_to_widths
from deploykit.graph.copies import shared_copy
from deploykit.graph.groups import ModelGraph
from deploykit.zoo import build_model


def test_a_variant_leaves_the_original_untouched_and_shares_its_whole_layers():
    built = build_model("torchvision:resnet18", input_shape=(1, 3, 64, 64))
    model, x = built.traced.eval(), built.example_input()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        y = model(x)
    groups = ModelGraph(model, x).prunable()
    cut = groups[0]
    variant = prune_to_widths(model, x, {cut.id: cut.channels // 2})
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
    with torch.no_grad():
        assert torch.equal(model(x), y)
        assert variant(x).shape == y.shape
    ptr = {k: v.data_ptr() for k, v in model.state_dict().items()}
    got = variant.state_dict()
    shrunk = [k for k, v in got.items() if v.shape != before[k].shape]
    assert shrunk, "the variant was not pruned"
    assert all(got[k].data_ptr() != ptr[k] for k in shrunk)  # pruned tensors are new ones
    assert all(got[k].data_ptr() == ptr[k] for k in got if k not in shrunk)  # the rest are views of the original


def test_shared_copy_keeps_parameters_trainable_and_ties_intact():
    lin = torch.nn.Linear(4, 4)
    model = torch.nn.Sequential(lin, torch.nn.ReLU(), lin, torch.nn.BatchNorm1d(4))
    twin = shared_copy(model)
    assert twin[0] is twin[2] and twin[0] is not lin  # a module used twice stays one module
    assert twin[0].weight.requires_grad and twin[0].weight.data_ptr() == lin.weight.data_ptr()
    assert twin[3].running_var.data_ptr() == model[3].running_var.data_ptr()
