"""``deploykit inspect``: coupled channel groups and costs of a model."""

from __future__ import annotations

from pathlib import Path

import click

from deploykit.cli.common import MODEL_HELP, emit, human, ignore_option, json_option, model_options, out, table

EXAMPLE = "Example: deploykit inspect torchvision:resnet18 --input-shape 1x3x224x224 --json groups.json"


@click.command("inspect", epilog=EXAMPLE, help=f"""List the coupled channel groups (member layers, channels,
prunable or why not) and the model's params, MACs and activation memory.\n\n{MODEL_HELP}""")
@click.argument("model")
@model_options
@ignore_option
@json_option
def inspect(model: str, weights: str | None, input_shape: str | None, trust_factory: bool, ignore: tuple[str, ...],
            json_path: Path | None) -> None:
    """Show groups and costs."""
    from deploykit.graph.costs import measure
    from deploykit.graph.groups import ModelGraph
    from deploykit.graph.verify import probe
    from deploykit.zoo import build_model, check_input, parse_shape

    built = build_model(model, weights=weights, input_shape=parse_shape(input_shape) if input_shape else None, pretrained=False,
                        trust_factory=trust_factory)
    check_input(built)
    example = built.example_input()
    graph = ModelGraph(built.traced, example, ignore=list(ignore))
    # Each group is pruned on a copy and compared with masking: what cannot be followed is said here.
    verdict = probe(built.traced, example, graph, list(ignore))
    costs = measure(built.traced, example)
    result = {**costs.to_dict(), "input_shape": list(built.input_shape), "groups": [g.to_dict() for g in graph.groups],
              "verification": verdict.to_dict()}
    out(f"{built.spec}  input {'x'.join(map(str, built.input_shape))}  params {human(costs.params)}  "
        f"MACs {human(costs.macs)}  activations {human(costs.activation_bytes, 'B')}")
    rows = []
    for g in graph.groups:
        layers = g.layers
        shown = ", ".join(layers[:4]) + (f" (+{len(layers) - 4})" if len(layers) > 4 else "")
        rows.append([g.id, g.channels, "yes" if g.prunable else "no", g.reason or "", shown])
    out(table(["group", "channels", "prunable", "why not", "layers"], rows))
    if verdict.failed:
        out(f"{len(verdict.failed)} groups left whole: deploykit could not follow them (pruned != masked)")
    emit(result, json_path)
