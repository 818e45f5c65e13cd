"""`resrepro layer-response`: the std of every 3×3 layer's response (Fig. 7)."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from resrepro.cli.common import app, check_output


class Split(str, Enum):
    test = "test"
    train = "train"


class BNMode(str, Enum):
    eval = "eval"
    train = "train"


class Pooling(str, Enum):
    all = "all"
    channel = "channel"


@app.command("layer-response")
def layer_response(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories (or checkpoints) of trained runs.")],
    split: Annotated[Split, typer.Option(
        help="Images to run: the test set, or the training set unaugmented.")] = Split.test,
    bn_mode: Annotated[BNMode, typer.Option(
        help="BN normalises with its running statistics (eval) or each batch's own (train; the running "
        "statistics are left untouched).")] = BNMode.eval,
    pooling: Annotated[Pooling, typer.Option(
        help="std of all of a layer's outputs (all), or per channel averaged over channels.")] = Pooling.all,
    stem: Annotated[bool, typer.Option(
        help="Count the first 3×3 layer, as the paper's plot does (6n+1 layers for depth 6n+2), or only the "
        "stages' 6n.")] = True,
    data_dir: Annotated[Path | None, typer.Option(help="Dataset folder (default: each run's own).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 500,
    device: Annotated[str, typer.Option(help="auto (CUDA if available), cpu, cuda, cuda:1, ...")] = "auto",
    out: Annotated[Path | None, typer.Option(help="Write the CSV here (atomically), not to stdout.")] = None,
) -> None:
    """Std of each 3×3 layer's response (after BN, before ReLU/addition) of trained runs (Fig. 7), as CSV."""
    from resrepro.analysis.response import run_layer_responses

    if out is not None:
        check_output(out, folder=False)
    table = run_layer_responses(run_dirs, split=split.value, bn_mode=bn_mode.value, pooling=pooling.value,
                                include_stem=stem, data_dir=data_dir, batch_size=batch_size, device=device)
    text = table.to_csv(index=False)
    if out is None:
        sys.stdout.write(text)
        return
    from resrepro.io import write_text

    write_text(out, text)
    typer.echo(out)
