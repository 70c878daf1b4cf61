"""Optional dependencies: which extra of ``pip install noisynn[...]`` provides what.

The layers, noise models, ``convert`` and the model registry need only torch and numpy. The
rest is imported where it is used, through :func:`require`, so that a missing package is one
line naming the extra to install instead of a bare ``ModuleNotFoundError``:

===========  ====================================  ==============================================
extra        packages                              used by
===========  ====================================  ==============================================
``data``     pooch, platformdirs, scikit-learn     :mod:`noisynn.data` (downloads, the data and
                                                   cache directories, the embedded digits)
``engine``   ``data`` + safetensors, tqdm          :mod:`noisynn.engine`, ``noisynn.evaluate`` /
                                                   ``vote`` / ``sweep`` (checkpoints, progress)
``cli``      ``engine`` + typer, rich              the ``noisynn`` command
``report``   ``engine`` + matplotlib               :mod:`noisynn.report`
``all``      all of the above + ninja (``fast``)   the README's first command
===========  ====================================  ==============================================
"""

from __future__ import annotations

import importlib
from types import ModuleType

from noisynn.errors import NoisynnError

DISTRIBUTIONS = {"sklearn": "scikit-learn"}
"""Import names whose distribution (what pip installs) is named otherwise."""


class MissingDependency(NoisynnError, ModuleNotFoundError):
    """An optional package is not installed; the message names the extra that provides it."""


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingDependency` naming ``pip install 'noisynn[extra]'``.

    Args:
        module: The module to import (``"pooch"``, ``"safetensors.torch"``, ...).
        extra: The extra of noisynn that installs it (``"data"``, ``"engine"``, ...).
        feature: What needs it, for the message (``"downloading data sets"``).

    Returns:
        The imported module.

    Raises:
        MissingDependency: The package is not installed. An ``ImportError`` raised *inside* an
            installed package (a broken install) is passed on unchanged.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split(".")[0]
        if exc.name is None or exc.name.split(".")[0] != top:
            raise
        dist = DISTRIBUTIONS.get(top, top)
        raise MissingDependency(
            f"{feature} needs {dist}, which is not installed: pip install 'noisynn[{extra}]'", name=top
        ) from None
