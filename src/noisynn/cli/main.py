"""Entry point of the ``noisynn`` command: builds the typer app from the command modules."""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

try:  # typer >= 0.2x carries its own copy of click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - typer on top of click
    from click import exceptions as click_errors  # type: ignore[no-redef]

from noisynn import __version__


class OneLineErrors(TyperGroup):
    """The ``noisynn`` group: a usage error (a bad option value, a missing argument, an unknown option)
    is one line on stderr, ``error: ...``, and exit code 2, like every other error."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # noqa: ANN001
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError as exc:
            exc.show()  # no arguments at all: the help, as click prints it
            sys.exit(exc.exit_code)
        except click_errors.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "noisynn"
            message = " ".join(exc.format_message().split())
            typer.echo(f"error: {message} (see {where} --help)", err=True)
            sys.exit(2)
        except click_errors.ClickException as exc:
            typer.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    name="noisynn",
    help="Train and evaluate neural networks under noisy analog computation (Qin & Vucinic).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"noisynn {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """noisynn: Deep Noise Injection training, noisy inference, voting."""


from noisynn.cli import (  # noqa: E402
    attack_cmd,
    data_cmd,
    experiment_cmd,
    inspect_cmd,
    models_cmd,
    report_cmd,
    sweep_cmd,
)

for module in (models_cmd, inspect_cmd, data_cmd, experiment_cmd, sweep_cmd, report_cmd, attack_cmd):
    module.register(app)
