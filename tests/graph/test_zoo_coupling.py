"""Every family of the zoo: pruning is physically consistent (a pruned model equals the
unpruned one with the same channels zeroed where they are consumed), costs are
predicted exactly, and the pruned model exports to ONNX with parity."""

import copy
import random

import pytest
import torch

from deploykit.graph.costs import CostModel, measure
from deploykit.graph.groups import ModelGraph
from tests.zoo_cases import CLASSIFIERS, randomize


def masked_reference(model, graph, removed):
    """The unpruned model with the removed channels zeroed at every input they enter."""
    ref = copy.deepcopy(model)
    by_name = dict(model.named_modules())
    names = {m: n for n, m in by_name.items()}
    ref_modules = dict(ref.named_modules())
    for mod, sites in graph.input_sites().items():
        zero = [pos for gid, idxs, roots in sites for pos, r in zip(idxs, roots) if r in removed.get(gid, ())]
        if not zero:
            continue

        def hook(m, args, zero=torch.tensor(zero)):
            x = args[0].clone()
            x.index_fill_(-1 if isinstance(m, torch.nn.Linear) else 1, zero, 0.0)
            return (x, *args[1:])

        ref_modules[names[mod]].register_forward_pre_hook(hook)
    return ref


def random_removal(graph, seed=0):
    rnd = random.Random(seed)
    removed = {}
    for g in graph.prunable():
        atoms = list(g.atoms)
        k = rnd.randint(0, len(atoms) // 2)
        removed[g.id] = {c for a in rnd.sample(atoms, k) for c in a}
    return removed


@pytest.mark.parametrize("case", CLASSIFIERS, ids=[c.name for c in CLASSIFIERS])
def test_pruning_equals_masking_and_costs_are_exact(case, tmp_path):
    torch.manual_seed(0)
    model = randomize(case.small())
    x = torch.randn(2, *case.small_shape[1:])
    graph = ModelGraph(model, x[:1])
    cost_model = CostModel(graph)
    assert graph.prunable(), "every family has something to prune"
    removed = random_removal(graph)
    ref = masked_reference(model, graph, removed)
    with torch.no_grad():
        before = model(x)
    for gid, chans in removed.items():
        graph.remove(gid, chans)
    with torch.no_grad():
        after, expected = model(x), ref(x)
    assert after.shape == before.shape
    if case.removal_is_masking:
        torch.testing.assert_close(after, expected, rtol=1e-4, atol=1e-4)
    measured = measure(model, x[:1])
    assert cost_model.predict().macs == measured.macs
    assert cost_model.predict().params == measured.params
    # Activation bytes are a model (views skipped, every op's output 4 bytes per element): close, not exact.
    assert 0.9 <= cost_model.predict().activation_bytes / measured.activation_bytes <= 1.1

    from deploykit.export.onnx import check_parity, export_onnx
    from deploykit.zoo.base import BuiltModel, Preprocess

    built = BuiltModel(model, case.name, case.small_shape, Preprocess(size=case.small_shape[-2:]))
    export_onnx(built, tmp_path / "m.onnx")
    assert check_parity(model, tmp_path / "m.onnx", [x])["max_rel_diff"] <= 1e-4
