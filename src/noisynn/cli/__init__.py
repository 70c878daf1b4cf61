"""The ``noisynn`` command-line tool (typer). Each command group lives in its own module."""
