"""Entry point of the ``noisynn`` command: builds the typer app from the command modules."""

from __future__ import annotations

import typer

from noisynn import __version__

app = typer.Typer(
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
    attack_cmd, data_cmd, experiment_cmd, inspect_cmd, models_cmd, report_cmd, sweep_cmd,
)

for module in (models_cmd, inspect_cmd, data_cmd, experiment_cmd, sweep_cmd, report_cmd, attack_cmd):
    module.register(app)
