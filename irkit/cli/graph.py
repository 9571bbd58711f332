"""The graph commands of the `irkit` command line: `grad`, `inspect`, `optimize`, and the
listings `ops` and `list` (what each registry holds).

The figures come from
`irkit.passes.analysis` and the exports from `irkit.passes.graph_view` (networkx, imported
only when a command asks for it).
"""

from __future__ import annotations

import time
from typing import Any

import click

from irkit.cli.app import JSON_OPTION, check_onnx_outputs, done, handle_errors, main, save_graph
from irkit.errors import IrkitError, escape, json_text

printable = escape  # a name fit for a terminal: control and unprintable characters escaped


def _shape(shape) -> list | None:
    return None if shape is None else [d if isinstance(d, int) else str(d) for d in shape]


def _fmt_shape(shape) -> str:
    return "?" if shape is None else "x".join(str(d) for d in shape) or "scalar"


def _mib(n: int) -> str:
    return f"{n / 2**20:.3f} MiB" if n >= 2**14 else f"{n} B"


def graph_report(graph, batch: int, parameter_names: list[str] | None = None,
                 per_node: bool = False) -> dict[str, Any]:
    """The summary `irkit inspect` prints, as one JSON-ready dict (symbolic dims = batch)."""
    from irkit.passes.analysis import Sizes, figures, node_figures, parameters, with_batch
    from irkit.passes.graph_view import critical_path, depth

    sized = with_batch(graph, batch)
    f = figures(sized, default=batch)
    params = parameters(graph, parameter_names)
    fixed = {n: v for n, v in graph.initializers.items()
             if v.dtype.kind == "f" and v.uses and n not in params}
    chain_depth, _ = depth(sized) if graph.nodes else (0, [])
    crit_flops, crit = critical_path(sized, default=batch) if graph.nodes else (0, [])
    info = {
        "name": graph.name, "batch": batch, "inputs": [_describe(v) for v in graph.inputs],
        "outputs": [_describe(v) for v in graph.outputs],
        "parameters": f.parameters if parameter_names is None else
        sum(_numel(s, batch) for s in params.values()),
        "parameter_tensors": [{"name": n, "shape": _shape(s)} for n, s in params.items()],
        # float initializers that do not train: exporter constants, running statistics
        "fixed": {"weights": sum(_numel(v.shape, batch) for v in fixed.values()),
                  "tensors": len(fixed)},
        "initializers": len(graph.initializers), "nodes": f.nodes, "flops": f.flops,
        "bytes_moved": f.bytes, "depth": chain_depth,
        "critical_path": {"nodes": len(crit), "flops": crit_flops, "first": crit[:1],
                          "last": crit[-1:]},
        "peak_memory": {"activation_bytes": f.peak.peak_bytes,
                        "planned_bytes": f.peak.planned_bytes, "at_node": f.peak.peak_node,
                        "inputs_bytes": f.peak.inputs_bytes,
                        "initializer_bytes": f.peak.initializer_bytes},
        "parts": f.parts,
        "saved_for_backward": {"values": f.saved_for_backward,
                               "bytes": f.saved_for_backward_bytes},
        "unknown_dims": f.unknown_dims, "ops": f.ops, "metadata": graph.metadata,
    }
    if per_node:
        info["per_node"] = node_figures(sized, Sizes(default=batch))
    return info


def _describe(v) -> dict[str, Any]:
    return {"name": v.name, "dtype": str(v.dtype), "shape": _shape(v.shape)}


def _numel(shape, batch: int) -> int:
    n = 1
    for d in shape or ():
        n *= d if isinstance(d, int) else batch
    return n


def _print_report(info: dict[str, Any]) -> None:
    echo = click.echo
    echo(f"graph {printable(info['name'])}: {info['nodes']} nodes, depth {info['depth']}")
    for key in ("inputs", "outputs"):
        echo(f"{key}:")
        for v in info[key]:
            echo(f"  {printable(v['name'])}: {v['dtype']}[{printable(_fmt_shape(v['shape']))}]")
    echo(f"parameters: {info['parameters']} in {len(info['parameter_tensors'])} tensors")
    for p in info["parameter_tensors"]:
        echo(f"  {printable(p['name'])}: {printable(_fmt_shape(p['shape']))}")
    fixed = info["fixed"]
    if fixed["tensors"]:
        echo(f"fixed (constants, running statistics): {fixed['weights']} in "
             f"{fixed['tensors']} tensors")
    batch = f" at batch {info['batch']}" + (f" (unknown dims {info['unknown_dims']} as 1)"
                                             if info["unknown_dims"] else "")
    echo(f"figures{batch}:")
    peak = info["peak_memory"]
    echo(f"  FLOPs              {info['flops']:,}")
    echo(f"  bytes moved        {info['bytes_moved']:,}")
    echo(f"  peak activations   {_mib(peak['activation_bytes'])} live at once (at node "
         f"{printable(peak['at_node'])}); {_mib(peak['planned_bytes'])} laid out best-fit")
    echo(f"  inputs             {_mib(peak['inputs_bytes'])}")
    echo(f"  initializers       {_mib(peak['initializer_bytes'])}")
    if len(info["parts"]) > 1:
        echo(f"  saved for backward {_mib(info['saved_for_backward']['bytes'])} in "
             f"{info['saved_for_backward']['values']} values")
        echo(f"  {'part':18s} {'nodes':>7s} {'FLOPs':>16s} {'bytes moved':>16s}")
        for part, row in info["parts"].items():
            echo(f"  {part:18s} {row['nodes']:7d} {row['flops']:16,} {row['bytes']:16,}")
    crit = info["critical_path"]
    echo(f"  critical path      {crit['nodes']} nodes, {crit['flops']:,} FLOPs")
    echo("ops:")
    for op, count in info["ops"].items():
        echo(f"  {printable(op):28s} {count}")
    if "per_node" in info:
        echo(f"{'node':40s} {'op':22s} {'part':9s} {'FLOPs':>14s} {'bytes':>12s}")
        for row in info["per_node"]:
            echo(f"{printable(row['name']):40s} {printable(row['op_type']):22s} "
                 f"{row['part']:9s} {row['flops']:14,} {row['bytes']:12,}")


def _train_graph(recipe: str, data: str | None):
    from irkit.cli.jobs import export_graph
    return export_graph(recipe, True, data, None, None)


def _strategy(text: str) -> str | int:
    if text == "sqrt":
        return text
    if not text.isdigit() or int(text) < 1:
        raise click.BadParameter(f"{text!r}: give sqrt or a byte budget (an integer > 0)",
                                 param_hint="--recompute")
    return int(text)


def _recipe_batch(source: str) -> int:
    """The batch size a train step of `source` runs at: the recipe's, else the default."""
    from irkit.train.settings import DEFAULTS
    if source.endswith(".onnx"):
        return DEFAULTS.batch_size
    from irkit.spec import load_recipe
    return int(load_recipe(source).train.get("batch_size", DEFAULTS.batch_size))


@main.command()
@click.argument("model", required=False)
@click.option("--train", "recipe", metavar="RECIPE", help="Inspect the train-step graph of a "
              "recipe (or ONNX model): forward, backward (grad/) and optimizer (opt/) parts.")
@click.option("--data", help="Dataset for --train's input width (default: the recipe's).")
@click.option("--batch", type=click.IntRange(min=1), help="Size of symbolic dims such as the "
              "batch (default: the recipe's batch size with --train, else 1).")
@click.option("--dot", "dot_path", type=click.Path(dir_okay=False),
              help="Also write the graph as Graphviz DOT text to this file.")
@click.option("--graphml", "graphml_path", type=click.Path(dir_okay=False),
              help="Also write the graph as GraphML to this file.")
@click.option("--recompute", metavar="sqrt|BYTES", help="With --train: the step graph after "
              "gradient checkpointing (strategy sqrt, or a byte budget per recomputed segment).")
@click.option("--nodes", "per_node", is_flag=True,
              help="Also list every node with its FLOPs and bytes.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def inspect(model: str | None, recipe: str | None, **options) -> None:
    """Inputs, outputs, parameters, FLOPs, peak memory and op histogram of an ONNX MODEL,
    or with --train RECIPE of its train-step graph; --dot/--graphml export the graph."""
    if (model is None) == (recipe is None):
        raise click.UsageError("give an ONNX MODEL, or --train RECIPE (one of them)")
    if options["recompute"] is not None:
        if recipe is None:
            raise click.UsageError("--recompute applies to a train-step graph: use --train")
        options["recompute"] = _strategy(options["recompute"])
    handle_errors(_inspect)(model, recipe, **options)


def _inspect(model: str | None, recipe: str | None, data: str | None, batch: int | None,
             dot_path: str | None, graphml_path: str | None, recompute: str | int | None,
             per_node: bool, as_json: bool) -> None:
    from irkit.onnx_io import check_model_outputs
    from irkit.safe_io import write_atomic
    source = model or recipe
    check_model_outputs({"--dot": dot_path, "--graphml": graphml_path}, [source])
    if recipe is not None:
        graph, batch = _train_graph(recipe, data), batch or _recipe_batch(recipe)
        names = [v.name for v in graph.inputs if f"next/{v.name}" in
                 {o.name for o in graph.outputs} and "/" not in v.name]
        if recompute is not None:
            from irkit.passes.checkpoint_activations import apply_checkpointing
            apply_checkpointing(graph, recompute, batch)
    else:
        from irkit.onnx_io import load
        from irkit.train.sources import counted_weights
        graph = load(model)
        batch, names = batch or 1, counted_weights(graph)
    info = graph_report(graph, batch, names, per_node)
    from irkit.onnx_io import import_notes
    info["notes"] = import_notes(graph) if model is not None else []  # what the exporter did
    from irkit.passes.graph_view import to_dot, to_graphml
    if dot_path:
        write_atomic(dot_path, to_dot(graph).encode())
    if graphml_path:
        write_atomic(graphml_path, to_graphml(graph))
    if as_json:
        click.echo(json_text(info, indent=2))
        return
    _print_report(info)
    for note in info["notes"]:
        click.echo(f"note: {printable(note)}")
    for path in (dot_path, graphml_path):
        if path:
            click.echo(f"wrote {printable(path)}")


def _latency(model_bytes: bytes, feeds: dict, repeats: int) -> float:
    """Median seconds per run on a CPU onnxruntime session (ORT_ENABLE_ALL)."""
    import statistics

    from irkit.runtimes.onnxruntime import make_session
    session = make_session(model_bytes, "cpu")
    session.run(None, feeds)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@main.command()
@click.argument("model")
@click.option("-o", "--output", required=True, help="Where to write the optimized model.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Batch (size of symbolic dims) of the latency measurement.")
@click.option("--repeats", type=click.IntRange(min=0), default=20, show_default=True,
              help="Timed runs per model for the latency figures (0: no timing).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def optimize(model: str, output: str, batch: int, repeats: int, as_json: bool) -> None:
    """Optimize an ONNX inference MODEL: fold BatchNorm into Conv/Gemm, MatMul+Add to Gemm,
    drop Dropout/Identity, fold constants and shapes, remove dead code; report node counts
    and onnxruntime latency before and after."""
    handle_errors(_optimize)(model, output, batch, repeats, as_json)


def _optimize(model: str, output: str, batch: int, repeats: int, as_json: bool) -> None:
    from irkit.graph_optimize import optimize_file
    from irkit.onnx_io import check_model_outputs
    from irkit.safe_io import write_atomic
    check_model_outputs({"-o": output}, [model])
    check_onnx_outputs({"-o": output})
    proto, report = optimize_file(model, batch, repeats, _latency)
    write_atomic(output, proto.SerializeToString())
    if as_json:
        click.echo(json_text(report, indent=2))
        return
    click.echo(f"nodes: {report['nodes_before']} -> {report['nodes_after']}")
    if report["dropped_training_info"]:
        click.echo("note: the input is a training model; the output is its optimized inference "
                   "graph, without training_info")
    for op, (before, after) in report["ops"].items():
        if before != after:
            click.echo(f"  {printable(op):28s} {before} -> {after}")
    if report.get("latency_ms"):
        lat = report["latency_ms"]
        click.echo(f"onnxruntime latency (batch {batch}, median of {repeats}): "
                   f"{lat['before']:.3f} ms -> {lat['after']:.3f} ms")
    click.echo(f"wrote {printable(output)}")


# ---- grad ----------------------------------------------------------------------------------
@main.command()
@click.argument("model")
@click.option("--of", "of", required=True, help="The output to differentiate.")
@click.option("--wrt", required=True, help="Comma-separated graph inputs or initializers.")
@click.option("-o", "--output", required=True, help="Where to write the gradient model.")
@JSON_OPTION
@handle_errors
def grad(model: str, of: str, wrt: str, output: str, as_json: bool) -> None:
    """Add gradients to an ONNX MODEL: outputs NAME_grad for each --wrt name, and an input
    OF_grad (the cotangent) unless OF is a scalar; inputs and outputs are kept."""
    from irkit.onnx_io import check_model_outputs, load
    from irkit.passes import AutodiffPass
    check_model_outputs({"-o": output}, [model])
    check_onnx_outputs({"-o": output})
    graph = load(model)
    names = [n.strip() for n in wrt.split(",") if n.strip()]
    if not graph.has_value(of) or of not in [v.name for v in graph.outputs]:
        raise IrkitError(f"{model}: no graph output named {of!r}; outputs: "
                         f"{', '.join(repr(v.name) for v in graph.outputs)}")
    for name in names:
        if not graph.has_value(name):
            raise IrkitError(f"{model}: no input or initializer named {name!r}")
    AutodiffPass(of, names)(graph)
    save_graph(graph, output)
    outputs = [v.name for v in graph.outputs]
    done(as_json, f"wrote {output}: outputs {escape(', '.join(outputs))}", output=output,
         outputs=outputs, gradients={n: f"{n}_grad" for n in names})


# ---- ops ----------------------------------------------------------------------------------
def op_rows() -> list[dict[str, Any]]:
    """One row per registered op: name, domain, opsets, gradient, family (its ops/ module)."""
    from irkit.onnx_io import IRKIT_OPSET, MIN_OPSET
    from irkit.ops import all_ops
    # since..until: the ai.onnx opsets irkit reads and writes the op in (import converts older
    # files; export converts to newer ones); semantics_since: when ONNX last changed the op
    return [{"op": o.op_type, "domain": o.domain or "ai.onnx", "since": max(o.since, MIN_OPSET),
             "until": IRKIT_OPSET, "semantics_since": o.since,
             "gradient": o.has_gradient and o.differentiable,
             "differentiable": o.differentiable,
             "family": type(o).__module__.rsplit(".", 1)[-1]} for o in all_ops()]


def ops_markdown(rows: list[dict[str, Any]]) -> str:
    """The supported-ops table of README.md: one row per op family, the ops with a gradient
    and those without, an op read from a later opset than the rest marked with it."""
    low, high = min(r["since"] for r in rows), rows[0]["until"]

    def name(r: dict[str, Any]) -> str:
        mark = f" ({r['since']}+)" if r["since"] > low else ""
        domain = "" if r["domain"] == "ai.onnx" else f"{r['domain']}."
        return f"{domain}{r['op']}{mark}"
    lines = [f"{len(rows)} ops, {sum(r['gradient'] for r in rows)} with a gradient. The IR "
             f"holds ai.onnx opset {high}'s semantics: import converts",
             f"other opsets to it, export writes opset {high} (or `--opset N`), or the lowest "
             "opset that holds what",
             f"opset {high} cannot (float8: 19, int4: 21, Cast `saturate`: 19, scatter max/min: "
             "18). An op marked",
             f"(N+) has its present semantics since opset N (the others since {low} or "
             "before).", "",
             "| family | with a gradient | not differentiable |", "|---|---|---|"]
    for family in sorted({r["family"] for r in rows}):
        mine = [r for r in rows if r["family"] == family]
        cells = [", ".join(name(r) for r in mine if r["gradient"] == flag) or "-"
                 for flag in (True, False)]
        lines.append(f"| {family} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--markdown", is_flag=True, help="Print the README's supported-ops table.")
@handle_errors
def ops(as_json: bool, markdown: bool) -> None:
    """Every supported op, its opset and whether it has a gradient."""
    rows = op_rows()
    if as_json:
        click.echo(json_text({"count": len(rows),
                               "with_gradient": sum(r["gradient"] for r in rows),
                               "ops": rows}, indent=2))
        return
    if markdown:
        click.echo(ops_markdown(rows))
        return
    for r in rows:
        grad_mark = "gradient" if r["gradient"] else ("-" if r["differentiable"] else "no grad")
        click.echo(f"{r['op']:28s} opset {r['since']}-{r['until']}  {grad_mark}")
    click.echo(f"{len(rows)} ops, {sum(r['gradient'] for r in rows)} with gradients")


# ---- list ----------------------------------------------------------------------------------
KINDS = ("optimizers", "losses", "metrics", "layers", "runtimes", "recipes", "datasets")


def registries() -> dict[str, list[dict[str, Any]]]:
    """Every extension point's names, read from its one registry."""
    from irkit.data import dataset_names
    from irkit.runtimes import runtime_names
    from irkit.spec import LAYERS, bundled_recipes, layer_arguments
    from irkit.train.losses import LOSSES
    from irkit.train.metrics import METRICS
    from irkit.train.optimizers import OPTIMIZERS
    return {
        "optimizers": [{"name": n, "hyperparameters": {f.name: f.default for f in c.fields()}}
                       for n, c in OPTIMIZERS.items()],
        "losses": [{"name": n, "aliases": list(loss.aliases),
                    "task": "classify" if loss.classification else "regress"}
                   for n, loss in LOSSES.items()],
        "metrics": [{"name": n, "task": m.task} for n, m in METRICS.items()],
        "layers": [{"name": n, "arguments": sorted(layer_arguments(n))} for n in LAYERS],
        "runtimes": [{"name": n} for n in runtime_names()],
        "recipes": [{"name": n} for n in bundled_recipes()],
        "datasets": [{"name": n} for n in dataset_names()],
    }


def _row(entry: dict[str, Any]) -> str:
    """One entry as a line: its name, then each detail (dicts as key=value, lists joined)."""
    parts = []
    for key, value in entry.items():
        if key == "name" or value in ([], {}):
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(map(str, value))
        parts.append(f"{key}: {value}")
    return f"  {entry['name']:34s} {'; '.join(parts)}".rstrip()


@main.command(name="list")
@click.argument("kind", required=False, type=click.Choice(KINDS))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def list_registries(kind: str | None, as_json: bool) -> None:
    """What irkit knows, by KIND: optimizers (with their hyperparameters), losses, metrics
    (beyond accuracy), layers a recipe can name, runtimes, bundled recipes and datasets (all of
    them without KIND)."""
    found = registries()
    found = {kind: found[kind]} if kind else found
    if as_json:
        click.echo(json_text(found, indent=2))
        return
    for name, entries in found.items():
        click.echo(f"{name}:")
        for entry in entries:
            click.echo(_row(entry))
