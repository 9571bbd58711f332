"""The training commands: `build`, `train` and `export` (recipes or ONNX files in, models out).

The jobs themselves (sources, datasets, settings, files) are in irkit/cli/jobs.py.
"""

from __future__ import annotations

import sys

import click

from irkit import distributed
from irkit.cli.app import (
    DEVICE,
    JSON_OPTION,
    LOSS,
    OPTIMIZER,
    check_onnx_outputs,
    done,
    handle_errors,
    main,
    save_graph,
)
from irkit.errors import IrkitError, json_text
from irkit.train.modes import BATCHNORM_MODES
from irkit.train.web_target import TARGETS


# ---- build ---------------------------------------------------------------------------------
@main.command()
@click.argument("spec")
@click.option("-o", "--output", required=True, help="Where to write the ONNX model.")
@click.option("--data", help="Dataset that fixes the input width (default: the recipe's).")
@JSON_OPTION
@handle_errors
def build(spec: str, output: str, data: str | None, as_json: bool) -> None:
    """Build an initialised (untrained) model from a recipe SPEC (.toml or bundled name)."""
    from irkit.cli.jobs import model_from_recipe
    from irkit.data import load_dataset
    from irkit.safe_io import check_outputs
    from irkit.spec import load_recipe
    from irkit.train.settings import resolve
    check_outputs({"-o": output}, [spec] + ([data] if data else []))
    check_onnx_outputs({"-o": output})
    recipe = load_recipe(spec)
    settings = resolve(recipe.settings(), {"dataset": data})
    ds = load_dataset(_need(settings.dataset, "--data"), label_column=settings.label_column)
    model = model_from_recipe(recipe, ds, settings)
    model.compile(settings=settings)  # the recipe's settings travel in the model's metadata
    save_graph(model.to_graph(), output)
    done(as_json, f"wrote {output}: {model.count_params()} parameters", output=output,
         parameters=model.count_params())


def _need(value, option: str):
    if value is None:
        raise IrkitError(f"the recipe names no dataset; pass {option} NAME|FILE")
    return value


BATCHNORM_OPTION = click.option(
    "--batchnorm", type=click.Choice(BATCHNORM_MODES), help="BatchNorm of an ONNX model: "
    f"{BATCHNORM_MODES[0]} (default, as torch's model.train()) normalizes with the batch's "
    "statistics and updates the running ones, even in an inference-mode export; "
    f"{BATCHNORM_MODES[1]} keeps the running statistics (torch's bn.eval()).")


# ---- train ---------------------------------------------------------------------------------
@main.command()
@click.argument("source")
@click.option("--data", help="Dataset: bundled iris, digits, mnist5k; mnist, mnist-test "
              "(downloaded to $IRKIT_DATA); or a .csv/.csv.gz/.npz file.")
@click.option("--label-column", help="The CSV column with the targets (default: label).")
@click.option("-o", "--output", required=True,
              help="Where to write the trained ONNX model (the best epoch's weights).")
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs (default: recipe's).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Batch size.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Learning rate.")
@click.option("--optimizer", type=OPTIMIZER, help="Optimizer (`irkit list optimizers`).")
@click.option("--loss", type=LOSS, metavar="NAME", help="Loss (`irkit list losses`), or "
              "output:NAME for a scalar output the model computes.")
@click.option("--val-split", type=click.FloatRange(0, 1, max_open=True),
              help="Held-out validation fraction.")
@click.option("--seed", type=click.IntRange(min=0),
              help="Seed for split, shuffling, init and dropout.")
@click.option("--device", type=DEVICE, help="cpu (default), cuda or auto.")
@click.option("--patience", type=click.IntRange(min=0),
              help="Stop early after this many epochs without improvement (0: never).")
@click.option("--min-delta", type=click.FloatRange(min=0),
              help="The smallest change of the monitored figure that counts as improvement.")
@click.option("--monitor", type=click.Choice(["val_loss", "val_accuracy", "loss", "accuracy"]),
              help="What the best epoch and early stopping watch (default val_loss).")
@click.option("--keep-best/--keep-last", "keep_best", default=None,
              help="Write the best epoch's weights to -o (default) or the last epoch's.")
@click.option("--recompute", metavar="sqrt|BYTES",
              help="Gradient checkpointing: recompute activations in the backward pass instead "
              "of keeping them (sqrt, or a byte budget per segment); less memory, more time.")
@click.option("--clip-norm", type=click.FloatRange(min=0),
              help="Clip the gradients to this global L2 norm before each update (0: off).")
@click.option("--accumulate", type=click.IntRange(1, 65536), metavar="N",
              help="Sum the gradients of N batches into one update (default 1).")
@click.option("--trainable", help="Comma-separated initializers to train (ONNX input only).")
@click.option("--freeze", help="Comma-separated initializers to keep fixed (ONNX input only).")
@BATCHNORM_OPTION
@click.option("--save-training", type=click.Path(dir_okay=False),
              help="Also write a training model (the last epoch's weights, optimizer state, "
              "step count, history, best weights) that `irkit train` resumes from.")
@click.option("--checkpoint", metavar="DIR",
              help="A folder updated every epoch: best.onnx, last.onnx, last_train.onnx "
              "(resumable) and history.json.")
@click.option("--plot", metavar="PNG",
              help="Write the training curves as a .png (.svg, .pdf) image (needs matplotlib).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option("--workers", type=click.IntRange(min=1), help="Train data-parallel in this many "
              "processes on this machine (starts mpiexec; needs irkit-nn[distributed]).")
@handle_errors
def train(source: str, output: str, as_json: bool, save_training: str | None,
          workers: int | None, **options) -> None:
    """Train a recipe (.toml / bundled name) or an ONNX model on a dataset; write the trained
    inference model (data scaling included) to OUTPUT.

    Which file holds which weights: -o holds the best epoch's weights (lowest validation
    loss, or --monitor; --keep-last for the last epoch's); --save-training holds the last
    epoch's state (and the best weights), to resume from. A report on overfitting ends every
    run (on stderr, or "report" in --json). Under `mpiexec -n N` (or with --workers N), N
    processes train data-parallel, each on 1/N of every batch; rank 0 writes the files."""
    from irkit.cli.jobs import run_training
    if distributed.world_size() > 1:
        distributed.comm()  # MPI first: from here on a failure ends the whole job at once
    if workers and workers > 1:
        from irkit.cli.launch import launch
        sys.exit(launch(_argv_without_workers(click.get_current_context()), workers))
    result = run_training(source, output, progress=not as_json, save_training=save_training,
                          **options)
    if not distributed.is_root():
        return
    if as_json:  # the overfitting report is in the document ("report")
        click.echo(json_text(result, indent=2))
    else:
        final = result["final"]
        figures = ", ".join(f"{k} {v:.4f}" for k, v in final.items())
        click.echo(f"best epoch {result['best_epoch']}: {figures}")
        click.echo(f"wrote {output}")


def _argv_without_workers(ctx: click.Context) -> list[str]:
    """The command's arguments as parsed, for the workers (all but --workers)."""
    args = [ctx.command.name]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name == "workers" or value is None:
            continue
        if isinstance(param, click.Argument):
            args.append(str(value))
        elif param.is_flag and param.secondary_opts and value is False:
            args.append(param.secondary_opts[0])
        elif param.is_flag:
            args += [param.opts[0]] if value else []
        else:
            args += [param.opts[0], str(value)]
    return args


# ---- export ----------------------------------------------------------------------------------
@main.command()
@click.argument("model")
@click.option("-o", "--output", help="Where to write the ONNX file.")
@click.option("--bundle", metavar="DIR", help="Write a training bundle into the folder DIR "
              "(train_step.onnx, eval.onnx, model.onnx, state.bin, bundle.json): what "
              "onnxruntime-web or the C API needs to train without irkit (README).")
@click.option("--target", type=click.Choice(TARGETS), default=TARGETS[0], show_default=True,
              help="For --bundle: 'web' writes the step in forms onnxruntime-web's WebGPU "
              "provider runs whole (int32 targets and step count, cross-entropy in plain ops).")
@click.option("--trainable", help="Comma-separated initializers to train (ONNX input only).")
@click.option("--freeze", help="Comma-separated initializers to keep fixed (ONNX input only).")
@BATCHNORM_OPTION
@click.option("--training", is_flag=True, help="A standard ONNX training model: the inference "
              "graph plus training_info (the train step and its update_binding).")
@click.option("--step", is_flag=True, help="The bare train-step graph (params, state, input, "
              "target, lr, step -> loss, correct, params', state'), runnable on onnxruntime.")
@click.option("--opset", type=click.IntRange(13, 25), default=None,
              help="ai.onnx opset to write [default: 17, or the lowest that holds the model's "
              "element types and ops: float8 19, int4 21, ...; --training/--bundle: 17]")
@click.option("--data", help="Dataset for a recipe's input width (default: the recipe's).")
@click.option("--loss", type=LOSS, metavar="NAME",
              help="Loss for --training/--step (default: recipe's / model's).")
@click.option("--optimizer", type=OPTIMIZER, help="Optimizer for --training/--step.")
@JSON_OPTION
@handle_errors
def export(model: str, output: str | None, bundle: str | None, target: str,
           trainable: str | None, freeze: str | None, batchnorm: str | None, training: bool,
           step: bool, opset: int | None, data: str | None, loss: str | None,
           optimizer: str | None, as_json: bool) -> None:
    """Write MODEL (an ONNX file or a recipe) as ONNX: the inference graph by default (an ONNX
    file round-trips ONNX -> IR -> ONNX; --opset converts); --bundle DIR: a training bundle."""
    from irkit.cli.jobs import export_graph, export_training_model, prepare
    from irkit.onnx_io import check_model_outputs
    from irkit.safe_io import write_atomic
    if sum(map(bool, (training, step, bundle))) > 1 or not (output or bundle) or (
            output and bundle):
        raise click.UsageError("give -o FILE (with at most one of --training, --step) or "
                               "--bundle DIR")
    if bundle:
        from irkit.train.bundle import write_bundle
        options = {"data": data, "loss": loss, "optimizer": optimizer, "trainable": trainable,
                   "freeze": freeze, "batchnorm": batchnorm}
        job, settings, dataset = prepare(model, options)
        contract = write_bundle(job, dataset, settings, bundle, opset or 17, target)
        done(as_json, f"wrote the training bundle {bundle} ({contract['state_bytes']} bytes "
             f"of state, target {target})", bundle=bundle, state_bytes=contract["state_bytes"],
             target=target)
        return
    if target != TARGETS[0]:
        raise IrkitError("--target applies to --bundle DIR")
    if trainable or freeze or batchnorm:
        raise IrkitError("--trainable/--freeze/--batchnorm apply to --bundle (irkit train takes "
                         "them too)")
    check_model_outputs({"-o": output}, [model] + ([data] if data else []))
    check_onnx_outputs({"-o": output})
    if training:
        opset = opset or 17
        proto = export_training_model(model, data, loss, optimizer, opset)
        write_atomic(output, proto.SerializeToString())
        nodes, step_nodes = len(proto.graph.node), len(proto.training_info[0].algorithm.node)
        done(as_json, f"wrote {output} (training model: {nodes} inference nodes, {step_nodes} "
             "train-step nodes)", output=output, kind="training", opset=opset, nodes=nodes,
             train_step_nodes=step_nodes)
        return
    graph = export_graph(model, step, data, loss, optimizer)
    written = save_graph(graph, output, opset)
    opset = next(o.version for o in written.opset_import if o.domain in ("", "ai.onnx"))
    done(as_json, f"wrote {output} ({len(graph.nodes)} nodes, opset {opset})", output=output,
         kind="step" if step else "inference", opset=opset, nodes=len(graph.nodes))


# ---- import-state ------------------------------------------------------------------------------
@main.command("import-state")
@click.argument("bundle")
@click.argument("state", required=False)
@click.option("-o", "--output", required=True, help="Where to write the training file.")
@JSON_OPTION
@handle_errors
def import_state(bundle: str, state: str | None, output: str, as_json: bool) -> None:
    """Write the training bundle BUNDLE with the state file STATE (what a runtime without
    irkit trained, in the layout of the bundle's state.bin; default: the initial state) as an
    irkit training file: evaluate or predict with it, or resume with `irkit train OUTPUT`."""
    from irkit.safe_io import check_outputs, write_atomic
    from irkit.train.bundle import training_proto
    check_outputs({"-o": output}, [p for p in (state,) if p] + [f"{bundle}/state.bin"])
    proto = training_proto(bundle, state)
    write_atomic(output, proto.SerializeToString())
    done(as_json, f"wrote {output} (the bundle's model with the state of "
         f"{state or 'its state.bin'})", output=output)
