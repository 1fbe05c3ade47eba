"""``deploykit convert-weights``: a pickled torch checkpoint to safetensors, without running its code."""

from __future__ import annotations

from pathlib import Path

import click

from deploykit.cli.common import out

EXAMPLE = "Example: deploykit convert-weights resnet20-checkpoint.pth resnet20.safetensors"


@click.command("convert-weights", epilog=EXAMPLE, help="""Convert a torch checkpoint that torch.load(weights_only=True)
refuses (it holds Python objects beside the tensors: training options, numpy scalars, ...) to a safetensors file
that --weights reads. The file is unpickled with a restricted unpickler: torch's tensor rebuilders, storages, dtypes
and plain containers are real; every other global it names is replaced by an inert stand-in that is never imported
and never called. The tensors of the state dict (the top level, or its 'state_dict' or 'model' entry) are written;
the globals that were neutralized are listed.""")
@click.argument("src", metavar="IN", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("dst", metavar="OUT", type=click.Path(dir_okay=False, path_type=Path))
def convert_weights(src: Path, dst: Path) -> None:
    """Convert a checkpoint to safetensors."""
    from deploykit.zoo.weights import convert_to_safetensors

    info = convert_to_safetensors(src, dst)
    where = f" (its {info['entry']} entry)" if info["entry"] else ""
    out(f"wrote {dst}: {info['tensors']} tensors from {src}{where}")
    if info["neutralized"]:
        out(f"neutralized (never imported or called): {', '.join(info['neutralized'])}")
    else:
        out("no other Python objects in the file")
