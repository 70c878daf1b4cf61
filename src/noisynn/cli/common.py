"""What every command shares: one-line errors, options, JSON output."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any

import typer

from noisynn.engine.validation import environment_error
from noisynn.errors import NoisynnError

DEVICE_HELP = "auto (CUDA if available), cpu or cuda."
DATA_DIR_HELP = "Data directory (default: $NOISYNN_DATA_DIR, else the per-user cache)."


def user_errors(fn: Callable) -> Callable:
    """Turn the package's errors (and bad values) into ``error: ...`` on stderr and exit code 2.

    So do a full disk and a denied write (``ENOSPC``, ``EDQUOT``, ``EACCES``, ``EPERM``, ``EROFS``,
    anywhere in the command): :func:`noisynn.engine.validation.environment_error`.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (NoisynnError, ValueError) as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(2) from None
        except OSError as exc:  # a full disk, a denied write: one line saying what was kept
            reason = environment_error(exc)
            if reason is None:
                raise
            typer.echo(f"error: {reason}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: finished points and epochs are saved; run the same command again to resume",
                       err=True)
            raise typer.Exit(130) from None

    return wrapper


def emit_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def progress_enabled(as_json: bool) -> bool:
    return not as_json and sys.stderr.isatty()
