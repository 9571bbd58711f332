"""The `irkit` command group and what every command shares: one-line errors (`handle_errors`,
`IrkitGroup`), the device choice, writing a graph. The commands live in one module per family
(train.py, graph.py, lab.py); irkit/cli/__init__.py loads them onto this group."""

from __future__ import annotations

import functools
import os
import sys

import click
import numpy as np

from irkit import distributed
from irkit.cli import signals
from irkit.errors import IrkitError, escape, json_text, ort_message
from irkit.version import DISTRIBUTION, __version__


class RegistryChoice(click.Choice):
    """A choice (any case) whose names come from a registry when the command runs, so a name
    registered at run time is a choice too, and the registry stays the only list."""

    def __init__(self, what: str, names, prefix: str | None = None) -> None:
        self.what, self._names, self.prefix = what, names, prefix  # prefix: `output:NAME`
        super().__init__([], case_sensitive=False)

    def convert(self, value, param, ctx):
        if self.prefix and isinstance(value, str) and value.startswith(self.prefix) \
                and len(value) > len(self.prefix):
            return value
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            extra = f", or {self.prefix}NAME" if self.prefix else ""
            self.fail(f"unknown {self.what} {value!r}; use one of {', '.join(self.choices)}"
                      f"{extra}", param, ctx)

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(self._names())

    @choices.setter
    def choices(self, _value) -> None:  # click.Choice.__init__ sets it; the registry rules
        pass


def _optimizer_names() -> list[str]:
    from irkit.train.optimizers import OPTIMIZERS
    return list(OPTIMIZERS)


def _loss_names() -> list[str]:
    from irkit.train.losses import loss_names
    return loss_names()


OPTIMIZER = RegistryChoice("optimizer", _optimizer_names)
LOSS = RegistryChoice("loss", _loss_names, prefix="output:")  # a scalar output of the model
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
        from irkit.checkout import installed_elsewhere_note
        note = installed_elsewhere_note()
        if note:
            click.echo(note, err=True)
        with signals.catching_signals():
            code = self._run(args, prog_name, complete_var, **extra)
            if signals.received() is not None and code in (0, None):  # a swallowed signal
                _fail(signals.message(signals.received()),
                      signals.exit_code(signals.received()))
        sys.exit(code if isinstance(code, int) else 0)

    def _run(self, args, prog_name, complete_var, **extra):
        """click's main, its own errors as one line; returns the exit code."""
        try:
            return super().main(args, prog_name, complete_var, False, **extra)
        except _NO_ARGS as e:  # bare `irkit`: the help, as click does
            click.echo(e.ctx.get_help() if e.ctx is not None else str(e), err=True)
            sys.exit(e.exit_code)
        except click.UsageError as e:
            command = e.ctx.command_path if e.ctx is not None else "irkit"
            _fail(f"{e.format_message()} (see `{command} --help`)", e.exit_code)
        except click.ClickException as e:
            _fail(e.format_message(), e.exit_code)
        except (click.Abort, KeyboardInterrupt):
            _fail(signals.message(signals.received()), signals.exit_code(signals.received()))

    def invoke(self, ctx: click.Context):
        """Run the command with no Python warnings (numpy's overflow and invalid-value ones
        among them) and no onnxruntime log lines (irkit.runtimes.onnxruntime.log_severity):
        irkit reports problems itself, in one line. `irkit --verbose` shows both."""
        import warnings
        try:  # the process-wide logger too: sessions made later in this process stay quiet
            import onnxruntime

            from irkit.runtimes.onnxruntime import log_severity
            onnxruntime.set_default_logger_severity(log_severity())
        except ImportError:  # no onnxruntime: nothing to quiet
            pass
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")  # main() below shows them again for --verbose
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
        except KeyboardInterrupt as e:
            signum = getattr(e, "signum", None)
            _fail(signals.message(signum), signals.exit_code(signum), error=e)
        except click.ClickException:  # a usage error found by the command: click's exit code 2
            raise
        except Exception as e:  # a bug or a library's error: still one line, no traceback
            if os.environ.get("IRKIT_TRACEBACK"):
                raise
            first = ort_message(e) if type(e).__module__.startswith("onnxruntime") else \
                str(e).strip().splitlines()[0] if str(e).strip() else ""
            _fail(f"unexpected {type(e).__name__}: {first} (set IRKIT_TRACEBACK=1 to see where)")
    return wrapper


@click.group(cls=IrkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", is_flag=True, help="Show onnxruntime's own log lines and Python's "
              "warnings beside irkit's messages (irkit --verbose COMMAND ...).")
@click.version_option(__version__, package_name=DISTRIBUTION, prog_name="irkit",
                      message="%(prog)s %(version)s (pip: %(package)s)")
def main(verbose: bool) -> None:
    """irkit: neural networks as a graph IR, autodiff to standard ONNX, training on
    onnxruntime. Run `irkit COMMAND --help` for each command."""
    if verbose:
        import warnings

        from irkit.runtimes.onnxruntime import VERBOSE_ENV
        os.environ[VERBOSE_ENV] = "1"  # read by the runtime's sessions, inherited by --workers
        warnings.simplefilter("default")


JSON_OPTION = click.option("--json", "as_json", is_flag=True,
                           help="Print one JSON document on stdout.")


def done(as_json: bool, text: str, **document) -> None:
    """A command's result: the line `text` for people, or with --json the `document`."""
    click.echo(json_text(document, indent=2) if as_json else text)


def check_onnx_outputs(outputs: dict[str, str | None]) -> None:
    """IrkitError unless every named model output (option -> path) ends in .onnx: a model
    written as x.txt is a mistake (a predictions file, a typo) no tool would read as ONNX."""
    for option, path in outputs.items():
        if path is not None and not os.fspath(path).lower().endswith(".onnx"):
            stem = os.path.splitext(os.fspath(path))[0]
            raise IrkitError(f"{option} {path}: irkit writes an ONNX model there; name it "
                             f"{stem}.onnx")


def save_graph(graph, path: str, opset: int | None = None):
    """Write an IR graph as an ONNX file (atomically; see irkit.onnx_io.save): at `opset`, or
    at the lowest that holds it (17 unless it needs newer). Returns the model as written."""
    from irkit.onnx_io import save
    return save(graph, path, opset)
