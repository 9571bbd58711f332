"""The `irkit` command line: build, train, export, grad, inspect, ops."""

from __future__ import annotations

import functools
import json
import os
import sys

import click
import numpy as np

from irkit import distributed
from irkit.errors import IrkitError, escape

DEVICE = click.Choice(["cpu", "cuda", "auto"])
_NO_ARGS = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2: a bare `irkit`


def _fail(message: str, code: int = 1, error: BaseException | None = None) -> None:
    """One line on stderr, escaped (names from files cannot drive the terminal), then exit;
    in a worker of an MPI job the line names the rank, and the whole job ends."""
    text = escape(" ".join(str(message).split("\n")))
    if distributed.world_size() > 1:
        distributed.fail_job(error, text, code)
    click.echo(f"irkit: error: {text}", err=True)
    sys.exit(code)


class IrkitGroup(click.Group):
    """click's group, with click's own usage errors (bad option values, missing options,
    unknown commands) printed as one line `irkit: error: ...` (exit code 2), like irkit's."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        if not standalone_mode:  # a caller that handles click's exceptions itself
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except _NO_ARGS as e:  # bare `irkit`: the help, as click does
            click.echo(e.ctx.get_help() if e.ctx is not None else str(e), err=True)
            sys.exit(e.exit_code)
        except click.UsageError as e:
            command = e.ctx.command_path if e.ctx is not None else "irkit"
            _fail(f"{e.format_message()} (see `{command} --help`)", e.exit_code)
        except click.ClickException as e:
            _fail(e.format_message(), e.exit_code)
        except click.Abort:
            _fail("interrupted", 130)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context):
        """Run the command with no Python warnings (numpy's overflow and invalid-value ones
        among them) and no onnxruntime log lines: irkit reports problems itself, in one line."""
        import warnings
        try:
            import onnxruntime
            onnxruntime.set_default_logger_severity(4)  # fatal only; errors come as exceptions
        except Exception:  # an onnxruntime without it (or none): nothing to quiet
            pass
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return super().invoke(ctx)


def handle_errors(fn):
    """Turn irkit's errors (and file errors) into a one-line message and exit code 1."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except IrkitError as e:
            _fail(str(e), error=e)
        except OSError as e:
            _fail(f"{e.filename or ''}: {e.strerror or e}")
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as e:  # a bug or a library's error: still one line, no traceback
            if os.environ.get("IRKIT_TRACEBACK"):
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            _fail(f"unexpected {type(e).__name__}: {first} (set IRKIT_TRACEBACK=1 to see where)")
    return wrapper


@click.group(cls=IrkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="irkit")
def main() -> None:
    """irkit: neural networks as a graph IR, autodiff to standard ONNX, training on
    onnxruntime. Run `irkit COMMAND --help` for each command."""


def _save(graph, path: str, opset: int = 17) -> None:
    from irkit.onnx_io import save
    save(graph, path, opset)


# ---- build ---------------------------------------------------------------------------------
@main.command()
@click.argument("spec")
@click.option("-o", "--output", required=True, help="Where to write the ONNX model.")
@click.option("--data", help="Dataset that fixes the input width (default: the recipe's).")
@handle_errors
def build(spec: str, output: str, data: str | None) -> None:
    """Build an initialised (untrained) model from a recipe SPEC (.toml or bundled name)."""
    from irkit.cli_train import model_from_recipe
    from irkit.data import load_dataset
    from irkit.safe_io import check_outputs
    from irkit.settings import resolve
    from irkit.spec import load_recipe
    check_outputs({"-o": output}, [spec] + ([data] if data else []))
    recipe = load_recipe(spec)
    settings = resolve(recipe.settings(), {"dataset": data})
    ds = load_dataset(_need(settings.dataset, "--data"), label_column=settings.label_column)
    model = model_from_recipe(recipe, ds, settings)
    model.compile(settings=settings)  # the recipe's settings travel in the model's metadata
    _save(model.to_graph(), output)
    click.echo(f"wrote {output}: {model.count_params()} parameters")


def _need(value, option: str):
    if value is None:
        raise IrkitError(f"the recipe names no dataset; pass {option} NAME|FILE")
    return value


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
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), help="Optimizer.")
@click.option("--loss", help="Loss: sparse_categorical_crossentropy (cross_entropy), "
              "categorical_crossentropy, mse, binary_crossentropy.")
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
@click.option("--trainable", help="Comma-separated initializers to train (ONNX input only).")
@click.option("--freeze", help="Comma-separated initializers to keep fixed (ONNX input only).")
@click.option("--save-training", type=click.Path(dir_okay=False),
              help="Also write a training model (the last epoch's weights, optimizer state, "
              "step count, history, best weights) that `irkit train` resumes from.")
@click.option("--checkpoint", metavar="DIR",
              help="A folder updated every epoch: best.onnx, last.onnx, last_train.onnx "
              "(resumable) and history.json.")
@click.option("--plot", metavar="PNG",
              help="Write the training curves as a .png (.svg, .pdf) image (needs irkit[plot]).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option("--workers", type=click.IntRange(min=1), help="Train data-parallel in this many "
              "processes on this machine (starts mpiexec; needs irkit[distributed]).")
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
    from irkit.cli_train import run_training
    if distributed.world_size() > 1:
        distributed.comm()  # MPI first: from here on a failure ends the whole job at once
    if workers and workers > 1:
        from irkit.launch import launch
        sys.exit(launch(_argv_without_workers(click.get_current_context()), workers))
    result = run_training(source, output, progress=not as_json, save_training=save_training,
                          **options)
    if not distributed.is_root():
        return
    if as_json:  # the overfitting report is in the document ("report")
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(result["report"]["text"], err=True)
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
@click.option("-o", "--output", required=True, help="Where to write the ONNX file.")
@click.option("--training", is_flag=True, help="A standard ONNX training model: the inference "
              "graph plus training_info (the train step and its update_binding).")
@click.option("--step", is_flag=True, help="The bare train-step graph (params, state, input, "
              "target, lr, step -> loss, correct, params', state'), runnable on onnxruntime.")
@click.option("--opset", type=click.IntRange(13, 21), default=17, show_default=True)
@click.option("--data", help="Dataset for a recipe's input width (default: the recipe's).")
@click.option("--loss", help="Loss for --training/--step (default: recipe's / model's).")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), help="Optimizer for training.")
@handle_errors
def export(model: str, output: str, training: bool, step: bool, opset: int, data: str | None,
           loss: str | None, optimizer: str | None) -> None:
    """Write MODEL (an ONNX file or a recipe) as ONNX: the inference graph by default (an ONNX
    file round-trips ONNX -> IR -> ONNX; --opset converts)."""
    from irkit.cli_train import export_graph, export_training_model
    from irkit.safe_io import check_outputs, write_atomic
    if training and step:
        raise IrkitError("choose one of --training and --step")
    check_outputs({"-o": output}, [model] + ([data] if data else []))
    if training:
        proto = export_training_model(model, data, loss, optimizer, opset)
        write_atomic(output, proto.SerializeToString())
        click.echo(f"wrote {output} (training model: {len(proto.graph.node)} inference nodes, "
                   f"{len(proto.training_info[0].algorithm.node)} train-step nodes)")
        return
    graph = export_graph(model, step, data, loss, optimizer)
    _save(graph, output, opset)
    click.echo(f"wrote {output} ({len(graph.nodes)} nodes, opset {opset})")


# ---- grad ----------------------------------------------------------------------------------
@main.command()
@click.argument("model")
@click.option("--of", "of", required=True, help="The output to differentiate.")
@click.option("--wrt", required=True, help="Comma-separated graph inputs or initializers.")
@click.option("-o", "--output", required=True, help="Where to write the gradient model.")
@handle_errors
def grad(model: str, of: str, wrt: str, output: str) -> None:
    """Add gradients to an ONNX MODEL: outputs NAME_grad for each --wrt name, and an input
    OF_grad (the cotangent) unless OF is a scalar; inputs and outputs are kept."""
    from irkit.onnx_io import load
    from irkit.passes import AutodiffPass
    from irkit.safe_io import check_outputs
    check_outputs({"-o": output}, [model])
    graph = load(model)
    names = [n.strip() for n in wrt.split(",") if n.strip()]
    if not graph.has_value(of) or of not in [v.name for v in graph.outputs]:
        raise IrkitError(f"{model}: no graph output named {of!r}; outputs: "
                         f"{', '.join(repr(v.name) for v in graph.outputs)}")
    for name in names:
        if not graph.has_value(name):
            raise IrkitError(f"{model}: no input or initializer named {name!r}")
    AutodiffPass(of, names)(graph)
    _save(graph, output)
    click.echo(f"wrote {output}: outputs {escape(', '.join(v.name for v in graph.outputs))}")


# ---- ops ----------------------------------------------------------------------------------
@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ops(as_json: bool) -> None:
    """Every supported op, its opset and whether it has a gradient."""
    from irkit.onnx_io import IRKIT_OPSET, MIN_OPSET
    from irkit.ops import all_ops
    # since..until: the ai.onnx opsets irkit reads and writes the op in (import converts older
    # files; export converts to newer ones); semantics_since: when ONNX last changed the op
    rows = [{"op": o.op_type, "domain": o.domain or "ai.onnx", "since": max(o.since, MIN_OPSET),
             "until": IRKIT_OPSET, "semantics_since": o.since,
             "gradient": o.has_gradient and o.differentiable,
             "differentiable": o.differentiable} for o in all_ops()]
    if as_json:
        click.echo(json.dumps({"count": len(rows),
                               "with_gradient": sum(r["gradient"] for r in rows),
                               "ops": rows}, indent=2))
        return
    for r in rows:
        grad_mark = "gradient" if r["gradient"] else ("-" if r["differentiable"] else "no grad")
        click.echo(f"{r['op']:28s} opset {r['since']}-{r['until']}  {grad_mark}")
    click.echo(f"{len(rows)} ops, {sum(r['gradient'] for r in rows)} with gradients")


from irkit import cli_lab  # noqa: E402,F401  (registers evaluate, predict, plot)
from irkit.cli_graph import register_graph_commands  # noqa: E402

register_graph_commands(main)  # inspect and optimize (irkit/cli_graph.py)

if __name__ == "__main__":  # pragma: no cover
    # `python -m irkit.cli`: cli_lab registered its commands on the module `irkit.cli`
    from irkit.cli import main as registered
    registered()
