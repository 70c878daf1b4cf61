"""A user's own model, data and noise: resolving references to them, with one-line errors.

The engine names what it trains and evaluates by *references*, plain strings that a
checkpoint, a preset and the results store can record:

============  ==============================================================================
what          references
============  ==============================================================================
model         a registry name (``lstm-rows``), ``pkg.module:factory`` (called as
              ``factory(**options)``, plus ``input_shape=`` (one sample's shape) when it takes
              that argument; a plain torch model is converted with :func:`noisynn.convert`),
              ``local:module.qualname`` for a Python callable that cannot be imported (a
              lambda, a local function: usable in this process only)
data          a data set name (``digits``), the path of an ``.npz`` with ``x_train, y_train,
              x_test, y_test`` (recorded with its SHA-256, so a changed file is detected),
              ``pkg.module:function`` (called as ``function(**options)``, returning such a
              mapping or a ``(train, test)`` pair), ``python:data-HASH`` for data passed as
              Python objects (torch ``Dataset``/``DataLoader``, ``(x, y)`` tensors)
noise         ``additive``, ``multiplicative``, or ``pkg.module:Class`` (any
              :class:`noisynn.NoiseModel`, :class:`~noisynn.PerSite` included) with fixed
              parameters; the swept parameter (``sigma`` by default) is set per point
============  ==============================================================================

:func:`resolve_model`, :func:`resolve_data` and :func:`resolve_noise` turn references (or
the Python objects themselves) into a module, a :class:`noisynn.data.Dataset` and a
:class:`NoiseFamily`; :func:`model_reference` and :func:`data_reference` give the
reference of a Python object.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import json
import os
import re
import sys
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from noisynn import data as datasets
from noisynn.errors import DataError, ModelError, NoisynnError
from noisynn.models import MODELS, build_model
from noisynn.noise import KINDS, Additive, Multiplicative, NoiseModel, check_sigma, from_config
from noisynn.noise import noise as builtin_noise

__all__ = [
    "NoiseFamily", "resolve_model", "resolve_data", "resolve_noise", "model_reference", "data_reference",
    "data_identity", "is_import_reference", "check_model_reference", "NPZ_KEYS",
]

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_IMPORT_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_LOCAL_MODELS: dict[str, Callable[..., nn.Module]] = {}
_LOCAL_DATA: dict[str, tuple[datasets.Dataset, datasets.Dataset | None]] = {}


def is_import_reference(ref: object) -> bool:
    """True for ``pkg.module:name`` strings (``local:`` and ``python:`` references excluded)."""
    return (isinstance(ref, str) and bool(_IMPORT_REF.match(ref))
            and not ref.startswith(("local:", "python:")))


def _import(ref: str, what: str, error: type[NoisynnError]) -> Any:
    """The object ``pkg.module:attr.path`` names (the current directory is on the path)."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    module_name, _, attr = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise error(f"cannot import {module_name!r} for {what} {ref!r} ({exc}); give pkg.module:name importable "
                    "from the current directory or PYTHONPATH") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise error(f"{what} {ref!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _importable_name(obj: Any) -> str | None:
    """``module:qualname`` if importing that gives ``obj`` back (not a lambda, local or ``__main__``)."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname or module == "__main__":
        return None
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return None
    return f"{module}:{qualname}" if found is obj else None


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# -- models -----------------------------------------------------------------------------
def model_reference(model: str | Callable[..., nn.Module]) -> str:
    """The reference of a model: a string as it is, an importable callable as ``module:qualname``.

    A callable that cannot be imported (a lambda, a local function) is registered in this
    process as ``local:module.qualname``: training and evaluation work here, and its
    checkpoints reload only when the same callable is given again.
    """
    if isinstance(model, str):
        return model
    if isinstance(model, nn.Module) or not callable(model):
        raise ModelError(f"a model reference must be a name, pkg.module:factory or a callable that builds the "
                         f"model, got {type(model).__name__} (to train, wrap a module in a factory)")
    name = _importable_name(model)
    if name is not None:
        return name
    ref = f"local:{getattr(model, '__module__', '?')}.{getattr(model, '__qualname__', type(model).__name__)}"
    _LOCAL_MODELS[ref] = model
    return ref


def check_model_reference(ref: str) -> None:
    """Fail now (one line) if ``ref`` names no model: unknown name, unimportable or not callable."""
    _factory(ref)


def check_model_options(ref: str, options: dict | None, noise_kind: str | None = None) -> None:
    """Fail now (one line) if the model does not take ``options``: a registry network is built once at
    its default size (a fraction of a second), a factory's signature is checked without calling it."""
    options = dict(options or {})
    if not options:
        return
    if ref in MODELS:
        build_model(ref, noise_kind=noise_kind, **options)
        return
    fn = _factory(ref)
    if fn is not None:
        if "input_shape" in _parameters(fn):
            options.setdefault("input_shape", ())  # given by the data when the model is built
        _check_call(fn, options, f"model factory {ref!r}", ModelError)


def _parameters(fn: Callable) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def _factory(ref: str) -> Callable[..., nn.Module] | None:
    """The callable behind a reference (``None`` for a registry name)."""
    if ref in MODELS:
        return None
    if ref.startswith("local:"):
        if ref not in _LOCAL_MODELS:
            raise ModelError(f"model {ref!r} was a Python callable that cannot be imported (a lambda or local "
                             "function): pass the same callable again (e.g. noisynn.evaluate(CKPT, data, "
                             "factory=fn)), or define it at module level so that it can be imported")
        return _LOCAL_MODELS[ref]
    if not is_import_reference(ref):
        raise ModelError(f"unknown model {ref!r}: choose one of {', '.join(MODELS)} (see `noisynn models`) "
                         "or give pkg.module:factory")
    obj = _import(ref, "model", ModelError)
    if not callable(obj) or isinstance(obj, nn.Module):
        raise ModelError(f"model {ref!r} is a {type(obj).__name__}, not callable: give a function or class "
                         "that returns a torch.nn.Module")
    return obj


def _registry_model(name: str, sample_shape: tuple[int, ...], noise_kind: str | None, options: dict) -> nn.Module:
    """A registered network sized for samples of ``sample_shape`` (e.g. 8x8 digit rows)."""
    spec = MODELS[name]
    sized: dict = {}
    if tuple(sample_shape) != spec.input_shape:
        if len(spec.input_shape) == 2 and len(sample_shape) == 2:  # recurrent: steps x features
            sized = {"steps": sample_shape[0], "input_size": sample_shape[1]}
        elif len(spec.input_shape) == 3 and len(sample_shape) == 3 and sample_shape[1] == sample_shape[2]:
            sized = {"in_channels": sample_shape[0], "image_size": sample_shape[1]}
    return build_model(name, noise_kind=noise_kind, **{**sized, **options})


def resolve_model(model: str | Callable[..., nn.Module], sample_shape: tuple[int, ...] | None = None, *,
                  options: dict | None = None, noise_kind: str | None = None,
                  factory: Callable[..., nn.Module] | None = None) -> nn.Module:
    """Build the model a reference names, with fresh weights (seeded by torch's global generator).

    Args:
        model: a registry name, ``pkg.module:factory``, a ``local:`` reference or a callable.
        sample_shape: one sample's shape (sizes the registry networks; passed to a factory
            that takes ``input_shape``).
        options: keyword arguments of the factory (or the registry network).
        noise_kind: the training noise (only ``cnn6`` uses it).
        factory: the callable behind a ``local:`` reference (a checkpoint's lambda or local function).

    A model with no noise site (plain torch) is converted with :func:`noisynn.convert`.

    Raises:
        ModelError: unknown name, unimportable or non-callable factory, options it does
            not take, or a result that is not a ``torch.nn.Module``.
    """
    options = dict(options or {})
    if factory is not None and isinstance(model, str) and model.startswith("local:"):
        _LOCAL_MODELS[model] = factory  # the callable a checkpoint's local: model was built by
    ref = model_reference(model)
    if ref in MODELS:
        return _registry_model(ref, tuple(sample_shape or MODELS[ref].input_shape), noise_kind, options)
    fn = _factory(ref)
    assert fn is not None  # None only for a registry name, built above
    try:
        takes_shape = "input_shape" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes_shape = False
    if takes_shape and sample_shape is not None and "input_shape" not in options:
        options["input_shape"] = tuple(sample_shape)
    _check_call(fn, options, f"model factory {ref!r}", ModelError)
    built = fn(**options)
    if not isinstance(built, nn.Module):
        raise ModelError(f"model factory {ref!r} returned {type(built).__name__} {built!r:.40}, not a torch.nn.Module")
    return ensure_noisy(built, warn=False)


def _check_call(fn: Callable, options: dict, what: str, error: type[NoisynnError]) -> None:
    """Fail in one line if ``fn`` cannot be called with ``options`` (before calling it)."""
    try:
        inspect.signature(fn).bind(**options)
    except TypeError as exc:
        raise error(f"{what} cannot be called with the options {options} ({exc})") from None
    except ValueError:  # no signature (a builtin): let the call decide
        pass


def ensure_noisy(model: nn.Module, *, warn: bool = True) -> nn.Module:
    """``model`` itself if it has noise sites, else a copy made by :func:`noisynn.convert`."""
    from noisynn.convert import convert
    from noisynn.layers import noise_sites

    if any(True for _ in noise_sites(model, hosts=True)):
        return model
    converted = convert(model, warn=False)
    if warn:
        sites = sum(1 for _ in noise_sites(converted, hosts=True))
        warnings.warn(f"noisynn: {type(model).__name__} had no noise site; evaluated as noisynn.convert(model) "
                      f"({sites} sites)", stacklevel=3)
    return converted


def model_label(ref: str) -> str:
    """A short, file-name-safe name of a model reference (``pkg.nets:build`` -> ``build``)."""
    if ref in MODELS:
        return ref
    tail = ref.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
    return re.sub(r"[^\w.-]", "_", tail) or "model"


# -- data -------------------------------------------------------------------------------
def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_npz(ref: object) -> bool:
    return isinstance(ref, (str, Path)) and str(ref).lower().endswith(".npz")


def _as_tensor(value: Any, name: str, where: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    try:
        array = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - anything unconvertible is the user's data error
        raise DataError(f"{where}: {name} is not an array ({exc})") from None
    if array.dtype.kind not in "biuf":
        raise DataError(f"{where}: {name} has dtype {array.dtype}, not numbers: give numeric arrays")
    return torch.from_numpy(np.ascontiguousarray(array))


def _split(x: Any, y: Any, split: str, name: str, where: str, meta: dict | None = None) -> datasets.Dataset:
    """A checked :class:`noisynn.data.Dataset`: float32 inputs, int64 labels 0..C-1 of the same length."""
    x, y = _as_tensor(x, f"x_{split}", where), _as_tensor(y, f"y_{split}", where)
    if y.is_floating_point() or y.dtype in (torch.bool, torch.complex64, torch.complex128):
        raise DataError(f"{where}: labels y_{split} have dtype {str(y.dtype).removeprefix('torch.')}: give integer "
                        "class labels (e.g. y.astype('int64'))")
    if y.dim() != 1:
        raise DataError(f"{where}: labels y_{split} have shape {tuple(y.shape)}: give one class index per sample (N,)")
    if x.dim() < 2 or len(x) != len(y):
        raise DataError(f"{where}: x_{split} has shape {tuple(x.shape)} but y_{split} has {len(y)} labels: give one "
                        "label per sample")
    if len(y) == 0:
        raise DataError(f"{where}: the {split} split is empty")
    if int(y.min()) < 0:
        raise DataError(f"{where}: labels y_{split} must be class indices >= 0, got {int(y.min())}")
    if x.dtype == torch.bool or x.is_complex():
        raise DataError(f"{where}: x_{split} has dtype {x.dtype}: give float (or uint8) inputs")
    x = x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x.to(torch.float32)
    return datasets.Dataset(x=x.contiguous(), y=y.to(torch.int64), name=name, split=split, meta=dict(meta or {}))


def _from_object(obj: Any, split: str, name: str, where: str) -> datasets.Dataset:
    """One split from a noisynn Dataset, ``(x, y)``, a torch ``DataLoader`` or a torch ``Dataset``."""
    if isinstance(obj, datasets.Dataset):
        return _split(obj.x, obj.y, split, name, where, obj.meta)
    if isinstance(obj, (tuple, list)) and len(obj) == 2 and all(_arraylike(v) for v in obj):
        return _split(obj[0], obj[1], split, name, where)
    if isinstance(obj, torch.utils.data.Dataset) and not isinstance(obj, torch.utils.data.IterableDataset):
        obj = torch.utils.data.DataLoader(obj, batch_size=1024, shuffle=False)
    if isinstance(obj, torch.utils.data.DataLoader):
        xs, ys = [], []
        for batch in obj:
            if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
                raise DataError(f"{where}: a batch is a {type(batch).__name__}, not (inputs, labels)")
            xs.append(torch.as_tensor(batch[0]))
            ys.append(torch.as_tensor(batch[1]))
        if not xs:
            raise DataError(f"{where}: the {split} split is empty")
        return _split(torch.cat(xs), torch.cat(ys), split, name, where)
    raise DataError(f"{where}: cannot read a {type(obj).__name__} as data: give (x, y) tensors, a torch Dataset or "
                    "DataLoader of (input, label), or a mapping with x_train, y_train, x_test, y_test")


def _arraylike(v: Any) -> bool:
    return isinstance(v, (torch.Tensor, np.ndarray))


def _two_splits(obj: Any, name: str, where: str,
                meta: dict | None = None) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """``(train, test)`` from a mapping of the four arrays, a ``(train, test)`` pair, or one split (test only)."""
    if isinstance(obj, Mapping) or hasattr(obj, "files"):
        keys = set(obj.keys())
        missing = [k for k in NPZ_KEYS if k not in keys]
        if missing:
            raise DataError(f"{where} lacks {', '.join(missing)}: a data set needs the arrays "
                            f"{', '.join(NPZ_KEYS)}")
        train = _split(obj["x_train"], obj["y_train"], "train", name, where, meta)
        test = _split(obj["x_test"], obj["y_test"], "test", name, where, meta)
    elif (isinstance(obj, (tuple, list)) and len(obj) == 2 and not all(_arraylike(v) for v in obj)):
        train, test = (_from_object(o, s, name, where) for o, s in zip(obj, ("train", "test"), strict=True))
    else:
        return _from_object(obj, "train", name, where), None  # one split: evaluation data only
    if tuple(train.x.shape[1:]) != tuple(test.x.shape[1:]):
        raise DataError(f"{where}: training samples have shape {tuple(train.x.shape[1:])} but test samples "
                        f"{tuple(test.x.shape[1:])}: give samples of one shape")
    classes = int(max(train.y.max(), test.y.max())) + 1
    for ds in (train, test):
        ds.meta.setdefault("classes", [str(i) for i in range(max(classes, 2))])
    return train, test


@functools.lru_cache(maxsize=4)
def _npz(path: str, stamp: str) -> tuple[datasets.Dataset, datasets.Dataset | None, str]:
    where = f"data file {path}"
    sha = _file_sha256(Path(path))
    try:
        with np.load(path, allow_pickle=False) as archive:
            train, test = _two_splits(archive, Path(path).stem, where, {"file": path, "sha256": sha})
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{where} is not a readable .npz ({str(exc).splitlines()[0]}); write it with numpy.savez "
                        "(no object arrays)") from None
    return train, test, sha


def _load_npz(ref: str | Path) -> tuple[datasets.Dataset, datasets.Dataset | None, str]:
    path = Path(ref).expanduser().resolve()
    if not path.is_file():
        raise DataError(f"data file {path} not found: give the path of an .npz with {', '.join(NPZ_KEYS)}")
    stat = path.stat()
    return _npz(str(path), f"{stat.st_size}:{stat.st_mtime_ns}")


@functools.lru_cache(maxsize=2)
def _function_data(ref: str, options_json: str) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    fn = _import(ref, "data", DataError)
    if not callable(fn):
        raise DataError(f"data {ref!r} is a {type(fn).__name__}, not callable: give a function returning the data")
    options = json.loads(options_json)
    _check_call(fn, options, f"data function {ref!r}", DataError)
    result = fn(**options)
    return _two_splits(result, model_label(ref), f"data of {ref}")


def data_reference(data: Any, *, name: str = "") -> str:
    """The reference of data: a string or path as it is (an ``.npz`` made absolute); Python objects are
    registered in this process as ``python:data-HASH`` (the hash of their contents)."""
    if isinstance(data, (str, Path)):
        return str(Path(data).expanduser().resolve()) if _is_npz(data) else str(data)
    train, test = _two_splits(data, name or "data", "the data given")
    digest = hashlib.sha256()
    for ds in (train, test):
        if ds is not None:
            digest.update(f"{ds.split}:{tuple(ds.x.shape)}".encode())
            digest.update(ds.x.numpy().tobytes())
            digest.update(ds.y.numpy().tobytes())
    ref = f"python:data-{digest.hexdigest()[:16]}"
    _LOCAL_DATA[ref] = (train, test)
    return ref


def check_data_reference(ref: object) -> None:
    """Fail now (one line) if ``ref`` names no data: an unknown name, a missing ``.npz``, a function that
    cannot be imported or is not callable. Nothing is loaded (checked before anything is written)."""
    if not isinstance(ref, str) or ref in datasets.DATASETS or ref.startswith("python:"):
        return  # Python objects and python: references are checked when they are read
    if _is_npz(ref):
        path = Path(ref).expanduser()
        if not path.is_file():
            raise DataError(f"data file {path} not found: give the path of an .npz with {', '.join(NPZ_KEYS)}")
        return
    if is_import_reference(ref):
        fn = _import(ref, "data", DataError)
        if not callable(fn):
            raise DataError(f"data {ref!r} is a {type(fn).__name__}, not callable: give a function returning the data")
        return
    raise DataError(f"unknown dataset {ref!r}; choose one of {', '.join(datasets.DATASETS)}, or give an .npz "
                    "file or pkg.module:function")


def _rows(ds: datasets.Dataset, layout: str | None) -> datasets.Dataset:
    """Images (N, C, H, W) as rows (N, H, W*C) for a recurrent registry network, like the built-in data sets."""
    if layout == "rows" and ds.x.dim() == 4:
        n, c, h, w = ds.x.shape
        return datasets.Dataset(x=ds.x.permute(0, 2, 3, 1).reshape(n, h, w * c).contiguous(), y=ds.y,
                                name=ds.name, split=ds.split, meta={**ds.meta, "layout": "rows"})
    return ds


def resolve_data(data: Any, split: str, *, layout: str | None = None, data_dir=None, allow_partial: bool = False,
                 options: dict | None = None) -> datasets.Dataset:
    """One split of the data a reference (or Python object) names.

    Args:
        data: a data set name, an ``.npz`` path, ``pkg.module:function``, a ``python:`` reference,
            or the data itself (see :func:`data_reference`).
        split: ``"train"`` or ``"test"``.
        layout: ``"rows"`` turns (N, C, H, W) images into (N, H, W*C) rows (recurrent networks).
        data_dir, allow_partial, options: for the built-in data sets (options also go to a function).

    Raises:
        DataError: unknown name; a missing or unreadable file; missing arrays; labels that are
            not integers; inputs and labels of different lengths; train and test of other shapes.
    """
    options = dict(options or {})
    if isinstance(data, str) and data in datasets.DATASETS:
        return datasets.load(data, split, data_dir=data_dir, layout=layout, allow_partial=allow_partial, **options)
    if _is_npz(data):
        train, test, _ = _load_npz(data)
    elif isinstance(data, str) and data.startswith("python:"):
        if data not in _LOCAL_DATA:
            raise DataError(f"data {data!r} was given as Python objects in another process: pass the same data "
                            "again (e.g. noisynn.evaluate(CKPT, data))")
        train, test = _LOCAL_DATA[data]
    elif is_import_reference(data):
        train, test = _function_data(data, json.dumps(options, sort_keys=True, default=str))
    elif isinstance(data, str):
        raise DataError(f"unknown dataset {data!r}; choose one of {', '.join(datasets.DATASETS)}, or give an .npz "
                        "file or pkg.module:function")
    else:
        train, test = _two_splits(data, "data", "the data given")
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; choose train or test")
    chosen = train if split == "train" else test
    if chosen is None:  # a single split given: it is the evaluation data
        if split == "train":
            raise DataError("training needs two splits: give (train, test), or a mapping with "
                            f"{', '.join(NPZ_KEYS)}")
        chosen = train
    return _rows(chosen, layout)


def data_identity(data: str) -> dict:
    """What a checkpoint records to detect changed data: ``{"data_sha256": ...}`` of an ``.npz`` or Python data."""
    if _is_npz(data):
        return {"data_sha256": _load_npz(data)[2]}
    if isinstance(data, str) and data.startswith("python:"):
        return {"data_sha256": data.removeprefix("python:data-")}
    return {}


def data_label(ref: str) -> str:
    """A short name of a data reference (the file's stem, the function's name)."""
    if _is_npz(ref):
        return Path(ref).stem
    if is_import_reference(ref):
        return model_label(ref)
    return ref


# -- noise ------------------------------------------------------------------------------
def _init_params(cls: type[NoiseModel]) -> tuple[list[str], bool]:
    """A noise class's constructor parameters (``generator`` left out) and whether it takes ``**kwargs``."""
    try:
        sig = inspect.signature(cls.__init__)
    except (TypeError, ValueError):
        return [], True
    names = [n for n, p in sig.parameters.items() if n not in ("self", "generator")
             and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return names, any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())


def _set_generator(model: NoiseModel, generator: torch.Generator | None) -> NoiseModel:
    """Give ``model`` and every noise model inside it (PerSite's rules) the generator."""
    model.generator = generator
    for value in vars(model).values():
        inner = value.values() if isinstance(value, dict) else [value]
        for m in inner:
            if isinstance(m, NoiseModel) and m is not model:
                _set_generator(m, generator)
    return model


@dataclass(frozen=True)
class NoiseFamily:
    """A noise model with one parameter left free: what a sweep varies (``sigma_train``, ``sigma_val``).

    Attributes:
        kind: ``additive``, ``multiplicative`` or ``pkg.module:Class``.
        params: the other parameters (JSON values; nested noise models as their ``config()``).
        param: the swept parameter (``sigma``; for a :class:`~noisynn.PerSite`, every sub-model's).
    """

    kind: str
    params: dict = field(default_factory=dict)
    param: str = "sigma"

    @property
    def builtin(self) -> bool:
        return self.kind in KINDS and not self.params and self.param == "sigma"

    def at(self, value: float, generator: torch.Generator | None = None) -> NoiseModel:
        """The noise model at ``value`` of the swept parameter, drawing from ``generator``."""
        value = check_sigma(value)
        if self.builtin:
            return builtin_noise(self.kind, value, generator=generator)
        cls = _noise_class(self.kind)
        names, _ = _init_params(cls)
        try:
            if self.param in names:
                model = from_config({"class": self.kind, "params": {**self.params, self.param: value}})
            else:
                model = from_config({"class": self.kind, "params": self.params})
                model = model.with_sigma(value) if self.param == "sigma" else model.with_params(**{self.param: value})
        except ValueError as exc:
            raise NoisynnError(f"noise {self.label}: {str(exc).splitlines()[0]}") from None
        return _set_generator(model, generator)

    def config(self) -> dict:
        """``{"class", "params", "sweep"}``: what the store and checkpoints record."""
        return {"class": self.kind, "params": self.params, "sweep": self.param}

    @property
    def label(self) -> str:
        """The store's ``noise`` column: the kind, or the class name (plus a hash of its parameters)."""
        if self.builtin:
            return self.kind
        name = self.kind.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
        return f"{name}-{_hash(self.params)[:8]}" if self.params else name


def _noise_class(ref: str) -> type[NoiseModel]:
    if ref in KINDS:
        return {"additive": Additive, "multiplicative": Multiplicative}[ref]
    if not is_import_reference(ref):
        raise NoisynnError(f"unknown noise kind {ref!r}: use additive, multiplicative or pkg.module:Class "
                           "(a noisynn.NoiseModel subclass)")
    obj = _import(ref, "noise", NoisynnError)
    if not (isinstance(obj, type) and issubclass(obj, NoiseModel)):
        raise NoisynnError(f"noise {ref!r} is not a noisynn.NoiseModel subclass")
    return obj


def resolve_noise(noise: str | NoiseModel | NoiseFamily, params: dict | None = None,
                  param: str | None = None) -> NoiseFamily:
    """The :class:`NoiseFamily` of a noise reference or model.

    Args:
        noise: ``additive``, ``multiplicative``, ``pkg.module:Class``, a :class:`NoiseModel`
            (its other parameters are kept) or a family.
        params: fixed constructor parameters of a class given by name.
        param: the swept parameter; default ``sigma`` if the model has one (or is a
            ``PerSite``), else its only required (or, for an object, only numeric) parameter.

    Raises:
        NoisynnError: unknown kind, a class that is not a ``NoiseModel``, parameters it does not
            take, or no parameter to sweep.
    """
    params = dict(params or {})
    if isinstance(noise, NoiseFamily):
        if params or (param and param != noise.param):
            noise = NoiseFamily(noise.kind, {**noise.params, **params}, param or noise.param)
        return noise
    if isinstance(noise, NoiseModel):
        if params:
            raise NoisynnError("noise parameters go into the noise model itself when it is an object")
        if type(noise) in (Additive, Multiplicative) and param in (None, "sigma"):
            return NoiseFamily(cast("Additive | Multiplicative", noise).kind)
        config = noise.config()
        kind, params = config["class"], dict(config["params"])
        _noise_class(kind)  # importable?
        names, _ = _init_params(type(noise))
        if param is None:
            numeric = [k for k, v in params.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
            param = "sigma" if "sigma" in params or "sigma" not in names and not numeric else (
                numeric[0] if len(numeric) == 1 else None)
            if param is None:
                raise NoisynnError(f"cannot tell which parameter of {type(noise).__name__} to sweep "
                                   f"({', '.join(numeric)}): give sweep_param")
        if param in names:
            params.pop(param, None)
        elif param != "sigma" and param not in params:
            raise NoisynnError(f"{type(noise).__name__} has no parameter {param!r}: its parameters are "
                               f"{', '.join(names) or 'none'}")
        return NoiseFamily(kind, params, param)
    if not isinstance(noise, str):
        raise NoisynnError(f"noise must be additive, multiplicative, pkg.module:Class or a NoiseModel, "
                           f"got {type(noise).__name__}")
    cls = _noise_class(noise)
    names, var_kw = _init_params(cls)
    unknown = [k for k in params if k not in names]
    if unknown and not var_kw:
        raise NoisynnError(f"{cls.__name__} has no parameter {', '.join(map(repr, unknown))}: its parameters are "
                           f"{', '.join(names) or 'none'}")
    if param is None:
        required = [n for n in names if n not in params and _required_param(cls, n)]
        param = "sigma" if "sigma" in names or not required else (required[0] if len(required) == 1 else None)
        if param is None:
            raise NoisynnError(f"cannot tell which parameter of {cls.__name__} to sweep ({', '.join(required)}): "
                               "give --sweep-param (or sweep_param)")
    if param not in names and not (param == "sigma" and "with_sigma" in vars(cls)):
        raise NoisynnError(f"{cls.__name__} has no parameter {param!r} to sweep: its parameters are "
                           f"{', '.join(names) or 'none'}")
    if noise in KINDS and params:
        raise NoisynnError(f"{noise} noise has no parameter besides sigma, got {', '.join(sorted(params))}")
    family = NoiseFamily(noise, params, param)
    family.at(0.0)  # builds once: bad values fail here, in one line
    return family


def _required_param(cls: type[NoiseModel], name: str) -> bool:
    p = inspect.signature(cls.__init__).parameters[name]
    return p.default is inspect.Parameter.empty


def noise_of(meta: Mapping) -> NoiseFamily:
    """The training noise family a checkpoint's metadata (or a spec identity) records."""
    spec = meta.get("spec") or {}
    return NoiseFamily(meta["noise"], dict(spec.get("noise_params") or meta.get("noise_params") or {}),
                       spec.get("sweep_param") or meta.get("sweep_param") or "sigma")


def parse_params(pairs: list[str] | None, what: str = "--noise-param") -> dict:
    """``["width=0.1", "name=x"]`` -> ``{"width": 0.1, "name": "x"}`` (values read as JSON when they can be)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise NoisynnError(f"{what} {pair!r}: give KEY=VALUE (e.g. width=0.1)")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out
