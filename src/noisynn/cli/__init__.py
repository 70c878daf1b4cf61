"""The ``noisynn`` command-line tool (typer). Each command group lives in its own module."""

from noisynn._extras import require

for _module in ("typer", "rich"):  # the `cli` extra: one line naming it when missing
    require(_module, "cli", "the noisynn command")
