"""Tasks by configuration: a TOML file that loads as a `Task`, no Python needed.

```toml
[task]
name = "skin-lesion"                    # registry-style name shown in results
description = "Dermoscopy: benign nevus vs melanoma."
prompt_version = "cot-v1"               # the prompt used by default
constrained_prompt = "direct-v1"        # optional: the prompt for constrained decoding
negative = "NEVUS"                      # optional: the reference label of a screening view

[labels.MELANOMA]                       # one table per label, in display order
description = "Asymmetric, irregular border, several colours"
synonyms = ["malignant melanoma"]

[labels.NEVUS]
description = "Symmetric, regular border, one or two colours"
synonyms = ["benign nevus", "mole"]

[prompts.cot-v1]                        # one table per prompt version
system = "You are a dermatologist."
user = '''Describe the lesion, then answer with one of:
{labels}
End with "FINAL CLASSIFICATION: <label>".'''

[prompts.direct-v1]
user = "Classify this lesion as one of {label_names}. Answer with the label only."

[folder_map]                            # dataset folder name -> label name
mel = "MELANOMA"
nv = "NEVUS"

[params]                                # optional GenerationParams
max_tokens = 512

[parser]                                # optional; final-answer is the default
kind = "final-answer"                   # or "json", or "package.module:ParserClass"
```

Placeholders in prompt text are those of `ChatPromptTemplate`: `{labels}` becomes the
option list (one bullet per label with its description) and `{label_names}` the
comma-separated names. A prompt may read its text from a file next to the task file with
`user_file = "prompt.md"` / `system_file = "system.md"` instead of `user` / `system`.
A label may be given in one line, `NAME = "description"`, inside a `[labels]` table.

Example:
    >>> task = load_task_file("examples/skin_lesion_task.toml")
    >>> task.labels.names
    ('MELANOMA', 'NEVUS', 'KERATOSIS')
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from medbatch.errors import ConfigError
from medbatch.files import read_toml
from medbatch.labels import LabelSet
from medbatch.parsing.base import LabelParser
from medbatch.prompts.base import PromptTemplate
from medbatch.prompts.chat import ChatPromptTemplate
from medbatch.records import GenerationParams
from medbatch.tasks.base import Task

__all__ = ["TASK_FILE_SUFFIX", "load_task_file", "task_from_mapping"]

TASK_FILE_SUFFIX = ".toml"
"""Suffix that marks a task name as a path to a task file (e.g. in `[task] name`)."""

_TOP_KEYS = frozenset(
    {"task", "labels", "prompts", "folder_map", "params", "parser", "constrained_prompt"}
)
_TASK_KEYS = frozenset({"name", "description", "prompt_version", "constrained_prompt", "negative"})
_LABEL_KEYS = frozenset({"description", "synonyms"})
_PROMPT_KEYS = frozenset(
    {"system", "user", "system_file", "user_file", "image_position", "fold_system"}
)
_PARSER_KINDS = ("final-answer", "json")


def load_task_file(path: str | Path) -> Task:
    """Read a TOML task definition and build the `Task` it describes.

    Args:
        path: The task file. `user_file` / `system_file` in prompts are resolved against
            its folder.

    Returns:
        The task, with a `ChatPromptTemplate` per prompt version and a
        `FinalAnswerParser` (unless `[parser]` names another).

    Raises:
        ConfigError: The file is missing or not TOML, or a key is missing, unknown or
            invalid; the message names the file and the key (e.g. `prompts.cot-v1.user`).
    """
    path = Path(path).expanduser()
    raw = read_toml(path, "task file")
    return task_from_mapping(raw, base_dir=path.parent, source=str(path))


def task_from_mapping(
    raw: Mapping[str, Any], *, base_dir: str | Path = ".", source: str = "task definition"
) -> Task:
    """Build a `Task` from an already parsed task definition (the TOML file's tables).

    Args:
        raw: The tables `task`, `labels`, `prompts`, `folder_map`, `params`, `parser`.
        base_dir: Folder that `user_file` / `system_file` paths are relative to.
        source: Named in error messages (the file path when loading a file).

    Raises:
        ConfigError: A key is missing, unknown or invalid (the key is named).
    """
    where = _Where(source)
    _no_unknown(raw, _TOP_KEYS, where, "")
    task_table = _table(raw, "task", where, required=True)
    _no_unknown(task_table, _TASK_KEYS, where, "task")
    name = _string(task_table, "name", where, "task", required=True) or ""
    description = _string(task_table, "description", where, "task") or ""

    negative = task_table.get("negative")
    if negative is not None and not isinstance(negative, str):
        raise where.error("task.negative", f"must be a label name, not {negative!r}")
    labels = _labels(_table(raw, "labels", where, required=True), where, negative)
    prompts = _prompts(
        _table(raw, "prompts", where, required=True), labels, where, base_dir, task_name=name
    )
    prompt_version = _string(task_table, "prompt_version", where, "task") or next(iter(prompts))
    if prompt_version not in prompts:
        raise where.error("task.prompt_version", f"{prompt_version!r} is not in [prompts.*]")
    constrained = _string(task_table, "constrained_prompt", where, "task")
    if constrained is None:
        constrained = _string(raw, "constrained_prompt", where, "")
    if constrained is not None and constrained not in prompts:
        raise where.error("task.constrained_prompt", f"{constrained!r} is not in [prompts.*]")

    folder_map = _folder_map(_table(raw, "folder_map", where), labels, where)
    params = _params(_table(raw, "params", where), where)
    parser = _parser(_table(raw, "parser", where), labels, where)
    return Task(
        name=name,
        labels=labels,
        prompts=prompts,
        prompt_version=prompt_version,
        parser=parser,
        folder_map=folder_map,
        constrained_prompt_version=constrained,
        params=params,
        description=description,
    )


class _Where:
    """Names the source and key in every error."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: {message}")


def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _no_unknown(table: Mapping[str, Any], allowed: frozenset[str], where: _Where, at: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise where.error(
            _key(at, unknown[0]), f"unknown key; allowed here: {', '.join(sorted(allowed))}"
        )


def _table(
    raw: Mapping[str, Any], name: str, where: _Where, *, required: bool = False
) -> dict[str, Any]:
    value = raw.get(name)
    if value is None:
        if required:
            raise where.error(name, f"missing table [{name}]")
        return {}
    if not isinstance(value, dict):
        raise where.error(name, f"must be a table ([{name}]), not {type(value).__name__}")
    return value


def _string(
    table: Mapping[str, Any], name: str, where: _Where, at: str, *, required: bool = False
) -> str | None:
    value = table.get(name)
    if value is None:
        if required:
            raise where.error(_key(at, name), "missing (a string is required)")
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise where.error(_key(at, name), f"must be a non-empty string, not {value!r}")
    return value


def _labels(table: Mapping[str, Any], where: _Where, negative: str | None = None) -> LabelSet:
    if not table:
        raise where.error("labels", "at least one label is needed ([labels.NAME])")
    specs: dict[str, Any] = {}
    for name, spec in table.items():
        at = f"labels.{name}"
        if isinstance(spec, str):
            specs[name] = {"description": spec}
            continue
        if not isinstance(spec, dict):
            raise where.error(at, "must be a table or a description string")
        _no_unknown(spec, _LABEL_KEYS, where, at)
        synonyms = spec.get("synonyms", [])
        if not isinstance(synonyms, list) or not all(isinstance(s, str) for s in synonyms):
            raise where.error(f"{at}.synonyms", "must be a list of strings")
        description = spec.get("description", "")
        if not isinstance(description, str):
            raise where.error(f"{at}.description", "must be a string")
        specs[name] = {"description": description, "synonyms": tuple(synonyms)}
    try:
        return LabelSet.from_mapping(specs, negative=negative)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise where.error("labels", str(first["msg"]).removeprefix("Value error, ")) from exc


def _prompts(
    table: Mapping[str, Any],
    labels: LabelSet,
    where: _Where,
    base_dir: str | Path,
    *,
    task_name: str,
) -> dict[str, PromptTemplate]:
    if not table:
        raise where.error("prompts", "at least one prompt is needed ([prompts.VERSION])")
    prompts: dict[str, PromptTemplate] = {}
    for version, spec in table.items():
        at = f"prompts.{version}"
        if not isinstance(spec, dict):
            raise where.error(at, "must be a table with at least `user`")
        _no_unknown(spec, _PROMPT_KEYS, where, at)
        user = _text(spec, "user", where, at, base_dir)
        if user is None:
            raise where.error(f"{at}.user", "missing (give `user` or `user_file`)")
        system = _text(spec, "system", where, at, base_dir)
        position = spec.get("image_position", "after")
        if position not in ("before", "after"):
            raise where.error(
                f"{at}.image_position", f"must be 'before' or 'after', not {position!r}"
            )
        fold = spec.get("fold_system", False)
        if not isinstance(fold, bool):
            raise where.error(f"{at}.fold_system", "must be true or false")
        prompts[version] = ChatPromptTemplate(
            user,
            system=system,
            labels=labels,
            image_position=position,
            fold_system=fold,
            name=f"{task_name}/{version}",
        )
    return prompts


def _text(
    spec: Mapping[str, Any], name: str, where: _Where, at: str, base_dir: str | Path
) -> str | None:
    inline = spec.get(name)
    file_name = spec.get(f"{name}_file")
    if inline is not None and file_name is not None:
        raise where.error(f"{at}.{name}", f"give `{name}` or `{name}_file`, not both")
    if file_name is not None:
        if not isinstance(file_name, str):
            raise where.error(f"{at}.{name}_file", "must be a path string")
        file_path = Path(base_dir) / Path(file_name).expanduser()
        try:
            return file_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise where.error(f"{at}.{name}_file", f"cannot read {file_path}: {exc}") from exc
    if inline is not None and not isinstance(inline, str):
        raise where.error(f"{at}.{name}", "must be a string")
    return inline


def _folder_map(table: Mapping[str, Any], labels: LabelSet, where: _Where) -> dict[str, str]:
    for folder, label in table.items():
        if not isinstance(label, str) or label not in labels:
            raise where.error(
                f"folder_map.{folder}",
                f"{label!r} is not a label; use one of {', '.join(labels.names)}",
            )
    return dict(table)


def _params(table: Mapping[str, Any], where: _Where) -> GenerationParams:
    if "stop" in table and isinstance(table["stop"], list):
        table = {**table, "stop": tuple(table["stop"])}
    try:
        return GenerationParams.model_validate(table)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "value"
        raise where.error(f"params.{key}", str(first["msg"])) from exc


def _parser(table: Mapping[str, Any], labels: LabelSet, where: _Where) -> LabelParser:
    options = dict(table)
    kind = options.pop("kind", "final-answer")
    if not isinstance(kind, str):
        raise where.error("parser.kind", "must be a string")
    try:
        if kind == "final-answer":
            from medbatch.parsing.answer import FinalAnswerParser

            return FinalAnswerParser(labels, **options)
        if kind == "json":
            from medbatch.parsing.json import JSONLabelParser

            return JSONLabelParser(labels, **options)
        if ":" in kind:
            from medbatch.registry import import_object

            parser_cls = import_object(kind)
            parser = parser_cls(labels, **options)
            if not isinstance(parser, LabelParser):
                raise where.error("parser.kind", f"{kind} does not build a LabelParser")
            return parser
    except TypeError as exc:
        raise where.error("parser", f"invalid option for {kind}: {exc}") from exc
    except ImportError as exc:
        raise where.error("parser.kind", f"cannot import {kind}: {exc}") from exc
    raise where.error(
        "parser.kind",
        f"unknown parser {kind!r}; use {' or '.join(_PARSER_KINDS)} or 'package.module:Class'",
    )
