"""`resrepro models`: every architecture with its layers, parameters and multiply-adds beside the paper's."""

from __future__ import annotations

from enum import Enum

import typer

from resrepro.cli.common import Format, app, print_records


class Family(str, Enum):
    cifar = "cifar"
    imagenet = "imagenet"


@app.command()
def models(
    family: Family | None = typer.Option(None, help="Only the CIFAR-10 nets (§4.2) or the ImageNet nets (Table 1)."),
    fmt: Format = typer.Option(Format.table, "--format", help="Output format (data go to stdout)."),
) -> None:
    """List every registered architecture with params and multiply-adds, beside Table 1 / Table 6."""
    from resrepro.models.summary import model_table

    records = model_table(family.value if family else None)
    if fmt in (Format.table, Format.markdown):
        records = [_humanise(r) for r in records]
    print_records(records, fmt, title="resrepro architectures (multiply-adds for one image)")


def _humanise(r: dict) -> dict:
    def num(v, unit, scale):
        return "—" if v is None else f"{v / scale:,.3f}{unit}" if scale > 1e6 else f"{v / scale:,.2f}{unit}"

    macs_scale, macs_unit = (1e9, "G") if r["family"] == "imagenet" else (1e6, "M")
    return {
        "name": r["name"], "family": r["family"], "layers": r["layers"], "shortcut": r["shortcut"] or "—",
        "params": f"{r['params']:,}", "paper params": num(r["paper_params"], "M", 1e6),
        "mult-adds": num(r["macs"], macs_unit, macs_scale), "paper mult-adds": num(r["paper_macs"], "G", 1e9),
    }
