"""``noisynn data``: download (``fetch``), verify (``check``) and inspect (``info``) the data sets."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from noisynn import data
from noisynn.cli.common import user_errors
from noisynn.errors import NoisynnError

data_app = typer.Typer(
    help="Download and verify the data sets (MNIST, MNIST strokes, CIFAR-10; digits is embedded).",
    no_args_is_help=True,
)

DATA_DIR_HELP = "Data directory (default: $NOISYNN_DATA_DIR, else the per-user cache directory)."
_STYLE = {"OK": "green", "partial": "yellow", "missing": "red", "corrupt": "bold red"}


def _fail(exc: NoisynnError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(2)


@data_app.command("fetch")
@user_errors
def fetch_cmd(
    name: str = typer.Argument(..., help=f"One of: {', '.join(data.DATASETS)}."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    base_url: str | None = typer.Option(
        None, "--base-url",
        help="Base URL(s) of the files (comma-separated mirrors); default: the canonical source, "
        "or $NOISYNN_MNIST_URL / $NOISYNN_STROKES_URL / $NOISYNN_CIFAR10_URL.",
    ),
) -> None:
    """Download NAME into <data-dir>/NAME/ and verify its checksums."""
    try:
        paths = data.fetch(name, data_dir=data_dir, base_url=base_url, progress=True)
    except NoisynnError as exc:
        raise _fail(exc) from None
    if not paths:
        typer.echo(f"{name}: embedded, nothing to download")
        return
    typer.echo(f"{name}: {len(paths)} files verified in {paths[0].parent}")


@data_app.command("check")
@user_errors
def check_cmd(
    name: str | None = typer.Argument(None, help="Check only this data set."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Verify what is present: name, files, status (OK / missing / corrupt / partial).

    Exit code 0 unless some data set is corrupt (1).
    """
    try:
        results = data.check(name, data_dir=data_dir)
    except NoisynnError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        table = Table(title=f"noisynn data in {data.data_dir(data_dir)}")
        for column in ("name", "files", "status", "detail"):
            table.add_column(column, overflow="fold")
        for r in results:
            table.add_row(r.name, r.files, f"[{_STYLE.get(r.status, '')}]{r.status}[/]", r.detail)
        Console(width=max(Console().width, 120)).print(table)
    if any(r.status == "corrupt" for r in results):
        raise typer.Exit(1)


@data_app.command("info")
@user_errors
def info_cmd(
    name: str = typer.Argument(..., help=f"One of: {', '.join(data.DATASETS)}."),
    split: str = typer.Option("train", "--split", help="train or test."),
    layout: str | None = typer.Option(None, "--layout", help="image or rows (image data sets)."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    allow_partial: bool = typer.Option(
        False, "--allow-partial", help="CIFAR-10: accept an incomplete copy (smoke runs only)."
    ),
) -> None:
    """Load NAME once and print its shape, dtype, value range and class counts."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = data.load(name, split, data_dir=data_dir, layout=layout, allow_partial=allow_partial)
    except NoisynnError as exc:
        raise _fail(exc) from None
    for w in caught:
        typer.echo(f"warning: {w.message}", err=True)
    x = ds.x
    typer.echo(f"{ds.name} {ds.split}: x {tuple(x.shape)} {str(x.dtype).replace('torch.', '')} "
               f"in [{float(x.min()):.3g}, {float(x.max()):.3g}], y {tuple(ds.y.shape)}")
    typer.echo(f"class counts: {ds.y.bincount(minlength=ds.num_classes).tolist()}")
    if ds.meta.get("partial"):
        typer.echo("PARTIAL data: for smoke runs only")


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to the ``noisynn`` app."""
    app.add_typer(data_app, name="data")
