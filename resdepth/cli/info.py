"""`resdepth info`: the nets' layers, parameters and multiply-adds beside the paper's."""


from typing import Annotated, Optional

import typer
from rich.table import Table

from resdepth.cli.common import (app, console, examples, parse_integers, user_errors, _print_json)


# --------------------------------------------------------------------------------------- info
@app.command(epilog=examples("resdepth info --depths 20,56,110,1202",
                             "resdepth info --dataset imagenet --json"))
@user_errors
def info(
    dataset: Annotated[str, typer.Option(metavar="NAME", help="cifar10 (6n+2 nets), digits or imagenet (Table 1)")] = "cifar10",
    depths: Annotated[Optional[str], typer.Option(metavar="N,N,...", help="comma-separated depths, e.g. 20,56,110")] = None,
    shortcut: Annotated[Optional[str], typer.Option(metavar="A|B|C", help="A (zero-pad), B (project where dims grow), C (project all)")] = None,
    json_: Annotated[bool, typer.Option("--json", help="print the rows as JSON on stdout, nothing else")] = False,
) -> None:
    """Depth, weighted layers, parameters and multiply-adds per image, beside the paper's."""
    from resdepth.results.catalog import catalog

    nets = catalog(dataset, parse_integers(depths, "--depths") if depths else None, shortcut)
    if json_:
        _print_json(nets.to_dict())
        return
    table = Table(title=f"{dataset}: residual nets, shortcut option {nets.shortcut}, "
                        f"{nets.image_size_pixels}x{nets.image_size_pixels} input")
    for column in ("depth", "layers", "blocks/stage", "params", "paper params (Table 6)",
                   "multiply-adds", "paper FLOPs (Table 1)"):
        table.add_column(column, justify="right")
    for row in nets.rows:
        macs, flops = row["multiply_adds"], row["paper_multiply_adds"]
        table.add_row(str(row["depth"]), str(row["layers"]), "/".join(map(str, row["blocks_per_stage"])),
                      f"{row['params']:,}", row["paper_params_label"] or "—",
                      f"{macs / 1e9:.2f}e9" if macs >= 1e8 else f"{macs / 1e6:.1f}e6",
                      f"{flops / 1e9:.1f}e9" if flops else "—")
    console.print(table)
