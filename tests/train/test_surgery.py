"""Removing channels mid-training carries the optimizer state of every kept element."""

import pytest
import torch
import torch.nn.functional as F

from deploykit.graph.groups import ModelGraph
from deploykit.train.surgery import remove_channels
from tests.models import TwoRes, randomize_bn


def _trained(opt_name):
    torch.manual_seed(0)
    model = randomize_bn(TwoRes()).train()
    graph = ModelGraph(model, torch.randn(1, 3, 16, 16))
    opt = {"sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), "adamw": lambda p: torch.optim.AdamW(p, lr=0.01)}[opt_name](
        model.parameters())
    for _ in range(2):
        loss = F.cross_entropy(model(torch.randn(4, 3, 16, 16)), torch.randint(0, 5, (4,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, graph, opt


@pytest.mark.parametrize("opt_name, keys", [("sgd", ["momentum_buffer"]), ("adamw", ["exp_avg", "exp_avg_sq"])])
def test_state_of_kept_elements_survives_removal(opt_name, keys):
    model, graph, opt = _trained(opt_name)
    old = {name: {k: opt.state[p][k].clone() for k in keys} for name, p in model.named_parameters()}
    old_step = {name: opt.state[p].get("step") for name, p in model.named_parameters()}
    drop = [1, 4, 6]
    keep = [c for c in range(8) if c not in drop]
    removed = remove_channels(graph, {"conv1": drop}, opt)
    assert removed == 3 and model.conv1.out_channels == 5 and model.conv2.in_channels == 5
    params = dict(model.named_parameters())
    # The optimizer holds exactly the model's (new) parameters.
    held = [p for g in opt.param_groups for p in g["params"]]
    assert {id(p) for p in held} == {id(p) for p in params.values()} and len(held) == len(params)
    expect = {"conv1.weight": lambda t: t[keep], "bn1.weight": lambda t: t[keep], "bn1.bias": lambda t: t[keep],
              "conv2.weight": lambda t: t[:, keep], "stem.weight": lambda t: t, "head.weight": lambda t: t}
    for name, f in expect.items():
        for k in keys:
            assert torch.equal(opt.state[params[name]][k], f(old[name][k])), (name, k)
        if old_step[name] is not None:
            assert torch.equal(torch.as_tensor(opt.state[params[name]]["step"]), torch.as_tensor(old_step[name]))
    assert all(p.grad is None for p in model.parameters())
    # Training goes on with the carried state.
    loss = F.cross_entropy(model(torch.randn(4, 3, 16, 16)), torch.randint(0, 5, (4,)))
    loss.backward()
    opt.step()


def test_two_groups_and_both_dimensions_of_one_layer():
    model, graph, opt = _trained("sgd")
    old = opt.state[model.conv2.weight]["momentum_buffer"].clone()  # out: group stem, in: group conv1
    remove_channels(graph, {"conv1": [0, 7], "stem": [2]}, opt)
    new = opt.state[model.conv2.weight]["momentum_buffer"]
    out_keep = [c for c in range(8) if c != 2]
    in_keep = list(range(1, 7))
    assert torch.equal(new, old[out_keep][:, in_keep])


def test_without_optimizer_it_just_removes():
    model, graph, _ = _trained("sgd")
    assert remove_channels(graph, {"down": [0, 1, 2]}) == 3
    assert model.down.out_channels == 13 and model.head.in_features == 13
