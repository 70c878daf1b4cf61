"""Entry point of the ``noisynn`` command: builds the typer app from the command modules."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="noisynn",
    help="Train and evaluate neural networks under noisy analog computation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

from noisynn.cli import models_cmd  # noqa: E402  (registers commands on `app`)

models_cmd.register(app)

try:  # the data commands land with the datasets issue
    from noisynn.cli import data_cmd  # noqa: E402
except ImportError:  # pragma: no cover
    data_cmd = None
if data_cmd is not None:
    data_cmd.register(app)
