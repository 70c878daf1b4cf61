"""``noisynn models``: list the registered networks."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from noisynn.models import MODELS, build_model, count_parameters


def models(as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")) -> None:
    """List the papers' networks: name, input shape, parameter count, source."""
    rows: list[dict[str, Any]] = []  # one JSON object per network
    for spec in MODELS.values():
        rows.append({
            "name": spec.name,
            "input": list(spec.input_shape),
            "params": count_parameters(build_model(spec.name)),
            "dataset": spec.dataset,
            "source": spec.source,
        })
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="noisynn models")
    for column in ("name", "input", "params", "dataset", "source"):
        table.add_column(column, justify="right" if column == "params" else "left")
    for row in rows:
        table.add_row(row["name"], "x".join(map(str, row["input"])), f"{row['params']:,}", row["dataset"],
                      row["source"])
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("models")(models)
