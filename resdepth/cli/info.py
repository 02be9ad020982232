"""`resdepth info`: the nets' layers, parameters and multiply-adds beside the paper's."""


from typing import Annotated, Optional

import typer
from rich.table import Table

from resdepth.models.architectures import (
    DEFAULT_SHORTCUT, check_shortcut, family_of, parse_depths, stage_plan, weighted_layers)
from resdepth.cli.common import (app, console, examples, user_errors, _print_json)


# --------------------------------------------------------------------------------------- info
@app.command(epilog=examples("resdepth info --depths 20,56,110,1202",
                             "resdepth info --dataset imagenet --json"))
@user_errors
def info(
    dataset: Annotated[str, typer.Option(help="cifar10 (6n+2 nets), digits or imagenet (Table 1)")] = "cifar10",
    depths: Annotated[Optional[str], typer.Option(help="comma-separated depths, e.g. 20,56,110")] = None,
    shortcut: Annotated[Optional[str], typer.Option(help="A (zero-pad), B (project where dims grow), C (project all)")] = None,
    json_: Annotated[bool, typer.Option("--json", help="print the rows as JSON on stdout, nothing else")] = False,
) -> None:
    """Depth, weighted layers, parameters and multiply-adds per image, beside the paper's."""
    family = family_of(dataset)
    option = check_shortcut(shortcut or DEFAULT_SHORTCUT[family])
    from resdepth.models.architectures import CIFAR_PAPER_DEPTHS, IMAGENET_DEPTHS

    chosen = parse_depths(depths) if depths else list(CIFAR_PAPER_DEPTHS if family == "cifar" else IMAGENET_DEPTHS)
    for depth in chosen:
        stage_plan(family, depth)

    from resdepth.results import paper as paper_figures
    from resdepth.models.complexity import count_multiply_adds, count_params
    from resdepth.data.datasets import IMAGE_SIZE_PIXELS, IN_CHANNELS, NUM_CLASSES
    from resdepth.models.network import ModelSpec, abstract_model

    channels, size = IN_CHANNELS[dataset], IMAGE_SIZE_PIXELS[dataset]
    table = Table(title=f"{dataset}: residual nets, shortcut option {option}, {size}x{size} input")
    for column in ("depth", "layers", "blocks/stage", "params", "paper params", "multiply-adds", "paper FLOPs"):
        table.add_column(column, justify="right")
    rows = []
    for depth in chosen:
        spec = ModelSpec(family, depth, True, option, NUM_CLASSES[dataset])
        params = count_params(abstract_model(spec, channels))
        macs = count_multiply_adds(spec, size, channels)
        plan = stage_plan(family, depth)
        if family == "cifar":
            paper_params = paper_figures.CIFAR_PARAMS_OPTION_A.get(depth) if option == "A" and dataset == "cifar10" else None
            paper_flops = None
        else:
            paper_params = paper_figures.IMAGENET_PARAMS_OPTION_B.get(depth) if option == "B" else None
            paper_flops = paper_figures.IMAGENET_MULTIPLY_ADDS.get(depth)
        rows.append({"depth": depth, "layers": weighted_layers(plan), "blocks_per_stage": list(plan.stage_sizes),
                     "params": params, "paper_params": paper_params, "multiply_adds": macs,
                     "paper_multiply_adds": paper_flops})
        table.add_row(str(depth), str(weighted_layers(plan)), "/".join(map(str, plan.stage_sizes)),
                      f"{params:,}", f"{paper_params:,}" if paper_params else "—",
                      f"{macs / 1e9:.2f}e9" if macs >= 1e8 else f"{macs / 1e6:.1f}e6",
                      f"{paper_flops / 1e9:.1f}e9" if paper_flops else "—")
    if json_:
        _print_json({"dataset": dataset, "shortcut": option, "image_size_pixels": size,
                     "in_channels": channels, "rows": rows})
    else:
        console.print(table)
