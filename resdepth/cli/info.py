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
    # The paper's columns only where the paper gives a figure for some row: Table 6 counts
    # parameters for CIFAR-10 alone, Table 1 multiply-adds for ImageNet alone.
    paper_params = any(row["paper_params_label"] for row in nets.rows)
    paper_flops = any(row["paper_multiply_adds"] for row in nets.rows)
    scale = multiply_adds_scale([row["multiply_adds"] for row in nets.rows])
    columns = ("depth", "layers", "blocks/stage", "params",
               *(("paper params (Table 6)",) if paper_params else ()), "multiply-adds",
               *(("paper FLOPs (Table 1)",) if paper_flops else ()))
    for column in columns:
        table.add_column(column, justify="right")
    for row in nets.rows:
        flops = row["paper_multiply_adds"]
        cells = [str(row["depth"]), str(row["layers"]),
                 "/".join(map(str, row["blocks_per_stage"])), f"{row['params']:,}"]
        if paper_params:
            cells.append(row["paper_params_label"] or "—")
        cells.append(format_multiply_adds(row["multiply_adds"], scale))
        if paper_flops:
            cells.append(format_multiply_adds(flops, scale, paper=True) if flops else "—")
        table.add_row(*cells)
    console.print(table)


def multiply_adds_scale(counts: list[int]) -> int:
    """The power of ten every multiply-add count of one table is written in: 9 when all reach a
    billion (ImageNet's nets), else 6, so that a column never mixes 40.6e6 with 0.13e9."""
    return 9 if min(counts) >= 1e9 else 6


def format_multiply_adds(count: float, scale: int, paper: bool = False) -> str:
    """3.86e9 (ours, two decimals), 3.8e9 (the paper's, one, as Table 1 prints it), 40.6e6."""
    decimals = 1 if paper or scale == 6 else 2
    return f"{count / 10 ** scale:.{decimals}f}e{scale}"
