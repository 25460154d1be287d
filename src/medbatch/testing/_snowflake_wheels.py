"""Other snowflake-ml-python releases, read from their wheels without installing them.

Only one release can be installed; the others are checked from their wheel files
(`scripts/fetch_sf_wheels.sh` fetches them into `.cache/sf/`):

```
what                                   how
ModelVersion.run_batch signature       parsed with `ast` from model_version_impl.py (that
                                       module imports half the SDK and cannot be loaded
                                       next to the installed release)
spec classes (InputSpec, JobSpec, ...) executed from the wheel's own pure-pydantic files
  and InferenceEngine                  (batch_inference_specs.py, batch_inference_job_specs.py,
                                       inference_engine.py); their `snowflake.ml.model.*`
                                       imports resolve to the wheel, everything else
                                       (pydantic, typing) to the installed packages
public modules (snowflake.ml.model,    their `__init__.py` is read with `ast`: a name is an
  .batch, .batch_inference)            attribute exactly when the real module exports it,
                                       loaded on first access
```

So `release.import_module("snowflake.ml.model").InputSpec` raises `AttributeError` for 1.47
exactly as the real 1.47 does, and `release.import_module("snowflake.ml.model.batch")`
raises `ModuleNotFoundError` for 1.27.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import inspect
import re
import sys
import types
import typing
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["WheelRelease", "run_batch_signature_from_source"]

_PACKAGE = "snowflake.ml.model"
_IMPL = "snowflake/ml/model/_client/model/model_version_impl.py"


class _SourceDefault:
    """A default value as written in source (`None`, `True`), shown verbatim."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def run_batch_signature_from_source(source: str) -> inspect.Signature:
    """`ModelVersion.run_batch`'s signature, parsed (not imported) from a module's source.

    Annotations are kept as their source text (`Optional[batch_inference_specs.JobSpec]`).

    Raises:
        LookupError: The source has no `ModelVersion.run_batch`.
    """
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "ModelVersion":
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "run_batch":
                    return _signature_of(item.args)
    raise LookupError("no ModelVersion.run_batch in this source")


def _signature_of(args: ast.arguments) -> inspect.Signature:
    params: list[inspect.Parameter] = []
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
    defaults += list(args.defaults)
    for index, (arg, default) in enumerate(zip(positional, defaults, strict=True)):
        kind = (
            inspect.Parameter.POSITIONAL_ONLY
            if index < len(args.posonlyargs)
            else inspect.Parameter.POSITIONAL_OR_KEYWORD
        )
        params.append(_parameter(arg, kind, default))
    if args.vararg:
        params.append(inspect.Parameter(args.vararg.arg, inspect.Parameter.VAR_POSITIONAL))
    for arg, kw_default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        params.append(_parameter(arg, inspect.Parameter.KEYWORD_ONLY, kw_default))
    if args.kwarg:
        params.append(inspect.Parameter(args.kwarg.arg, inspect.Parameter.VAR_KEYWORD))
    return inspect.Signature(params)


def _parameter(arg: ast.arg, kind: Any, default: ast.expr | None) -> inspect.Parameter:
    return inspect.Parameter(
        arg.arg,
        kind,
        default=inspect.Parameter.empty
        if default is None
        else _SourceDefault(ast.unparse(default)),
        annotation=ast.unparse(arg.annotation) if arg.annotation else inspect.Parameter.empty,
    )


def _from_imports(source: str) -> dict[str, tuple[str, str]]:
    """`alias -> (module, name)` for every absolute `from M import name as alias`."""
    found: dict[str, tuple[str, str]] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                found[alias.asname or alias.name] = (node.module, alias.name)
    return found


class WheelRelease:
    """One snowflake-ml-python wheel, opened read-only.

    Args:
        wheel: Path of `snowflake_ml_python-<version>-py3-none-any.whl`.

    Example:
        >>> from medbatch.snowflake.api import SpecClasses, detect_api
        >>> release = WheelRelease(".cache/sf/snowflake_ml_python-1.47.0-py3-none-any.whl")
        >>> release.version, detect_api(release.run_batch_signature())
        ('1.47.0', '1.x')
        >>> SpecClasses.installed("1.x", import_module=release.import_module).JobSpec
        <class '..._client.model.batch_inference_specs.JobSpec'>
    """

    def __init__(self, wheel: str | Path) -> None:
        self.path = Path(wheel)
        self.version = self.path.name.split("-")[1]
        with zipfile.ZipFile(self.path) as archive:
            self._files = {
                name: archive.read(name).decode()
                for name in archive.namelist()
                if name.startswith("snowflake/ml/model/") and name.endswith(".py")
            }
        tag = hashlib.sha256(str(self.path.resolve()).encode()).hexdigest()[:8]
        self._prefix = f"_medbatch_sf_{self.version.replace('.', '_')}_{tag}"
        self._modules: dict[str, types.ModuleType] = {}

    def __repr__(self) -> str:
        return f"WheelRelease({self.version})"

    # -- run_batch -------------------------------------------------------------------------

    def run_batch_signature(self) -> inspect.Signature:
        """The release's `ModelVersion.run_batch` signature (annotations as source text)."""
        return run_batch_signature_from_source(self._files[_IMPL])

    def annotation_class(self, parameter: str) -> type:
        """The class `run_batch`'s annotation of `parameter` names, loaded from the wheel.

        `Optional[batch_inference_specs.JobSpec]` resolves `batch_inference_specs` through
        model_version_impl.py's own imports, then loads `JobSpec` from that file.

        Raises:
            LookupError: The parameter has no `module.Class` annotation.
        """
        annotation = self.run_batch_signature().parameters[parameter].annotation
        match = re.search(r"([A-Za-z_]\w*)\.([A-Za-z_]\w*)", str(annotation))
        if match is None:
            raise LookupError(f"run_batch({parameter}=...) has no module.Class annotation")
        alias, class_name = match.groups()
        module, name = _from_imports(self._files[_IMPL])[alias]
        target = self.import_module(f"{module}.{name}")
        return typing.cast(type, getattr(target, class_name))

    # -- modules ---------------------------------------------------------------------------

    def _file_of(self, dotted: str) -> tuple[str, bool] | None:
        base = dotted.replace(".", "/")
        if f"{base}.py" in self._files:
            return f"{base}.py", False
        if f"{base}/__init__.py" in self._files:
            return f"{base}/__init__.py", True
        return None

    def import_module(self, name: str) -> types.ModuleType:
        """The release's module `name` (under `snowflake.ml.model`), as the wheel defines it.

        A package is represented by its exports (read from its `__init__.py`, loaded on
        access); a plain module is executed from the wheel.

        Raises:
            ModuleNotFoundError: The release has no such module.
        """
        if name in self._modules:
            return self._modules[name]
        found = self._file_of(name) if name.split(".")[:3] == _PACKAGE.split(".") else None
        if found is None:
            raise ModuleNotFoundError(f"No module named {name!r} in {self.path.name}")
        path, is_package = found
        module = self._package(name, path) if is_package else self._execute(name, path)
        self._modules[name] = module
        return module

    def _package(self, name: str, path: str) -> types.ModuleType:
        exports = _from_imports(self._files[path])
        module = types.ModuleType(f"{self._prefix}.{name}")
        module.__file__ = f"{self.path}/{path}"
        release = self

        def exported(attribute: str) -> Any:
            if attribute in exports:
                source, original = exports[attribute]
                if release._file_of(f"{source}.{original}") is not None:
                    return release.import_module(f"{source}.{original}")
                return getattr(release.import_module(source), original)
            if release._file_of(f"{name}.{attribute}") is not None:
                return release.import_module(f"{name}.{attribute}")
            raise AttributeError(f"module {name!r} has no attribute {attribute!r}")

        module.__dict__["__getattr__"] = exported  # PEP 562: consulted on a missing name
        return module

    def _execute(self, name: str, path: str) -> types.ModuleType:
        alias = f"{self._prefix}.{name}"
        module = types.ModuleType(alias)
        module.__file__ = f"{self.path}/{path}"
        module.__dict__["__builtins__"] = {**vars(builtins), "__import__": self._import}
        # pydantic resolves a model's annotations through sys.modules[cls.__module__].
        sys.modules[alias] = module
        code = compile(self._files[path], module.__file__, "exec")
        exec(code, module.__dict__)  # noqa: S102 - a pinned wheel's own file
        return module

    def _import(
        self,
        name: str,
        globals: Mapping[str, Any] | None = None,
        locals: Mapping[str, Any] | None = None,
        fromlist: Sequence[str] | None = (),
        level: int = 0,
    ) -> types.ModuleType:
        if level == 0 and (name == _PACKAGE or name.startswith(_PACKAGE + ".")):
            if not fromlist:
                raise ImportError(f"`import {name}` is not supported from a wheel; use from-import")
            return self.import_module(name)
        return builtins.__import__(name, globals, locals, fromlist or (), level)
