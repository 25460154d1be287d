"""Map a `LabelConstraint` onto each back-end's native constrained decoding.

One `LabelConstraint` (from the task's `LabelSet`) becomes, per back-end:

```
back-end                    choice mode                    json mode
vLLM offline                StructuredOutputsParams(       StructuredOutputsParams(
  (SamplingParams)            choice=[names])                json=schema)
vLLM server (extra_body)    {"structured_outputs":         {"structured_outputs":
                              {"choice": [names]}}           {"json": schema}}
OpenAI response_format      json_schema {"label": enum}    json_schema {"reasoning"?, "label"}
Snowflake                   as OpenAI; Cortex: {"type": "json", "schema": schema}
transformers                LabelTrie.prefix_allowed_tokens_fn (choice only)
```

Runners only call these functions; nothing here imports vLLM, transformers or Snowflake.
vLLM ≥ 0.12 ignores the old `guided_choice` / `guided_json` request fields *silently* (the
model then free-generates), which is why the server mapping uses `structured_outputs`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from medbatch.records import LabelConstraint

__all__ = [
    "LabelTrie",
    "TokenizerLike",
    "choice_json_schema",
    "to_openai_response_format",
    "to_snowflake_response_format",
    "to_vllm_sampling_structured_outputs",
    "to_vllm_server_extra_body",
    "to_vllm_structured_outputs",
    "unwrap_json_choice",
]

DEFAULT_SCHEMA_NAME = "label_answer"


def choice_json_schema(constraint: LabelConstraint) -> dict[str, Any]:
    """The JSON schema that carries `constraint` where a back-end only takes JSON schemas.

    In `json` mode this is `constraint.json_schema()` (with `reasoning` first when asked);
    in `choice` mode, an object with the one required field `label` (an enum of names).
    Either way the answer is read by `JSONLabelParser`.
    """
    _refuse_score_mode(constraint)
    if constraint.mode == "json":
        return constraint.json_schema()
    return LabelConstraint(labels=constraint.labels, mode="json", reasoning=False).json_schema()


def to_vllm_structured_outputs(constraint: LabelConstraint) -> dict[str, Any]:
    """Keyword arguments for `vllm.sampling_params.StructuredOutputsParams` (vLLM ≥ 0.11).

    Example:
        >>> to_vllm_structured_outputs(LabelConstraint(labels=("NORMAL", "POST_MI")))
        {'choice': ['NORMAL', 'POST_MI']}

    Use as `SamplingParams(structured_outputs=StructuredOutputsParams(**kwargs))`, or call
    `to_vllm_sampling_structured_outputs` which builds the object.
    """
    _refuse_score_mode(constraint)
    if constraint.mode == "choice":
        return {"choice": list(constraint.labels)}
    return {"json": constraint.json_schema()}


def _refuse_score_mode(constraint: LabelConstraint) -> None:
    """`score` mode is no decoding constraint: a back-end must compute the scores itself."""
    if constraint.mode == "score":
        raise ValueError(
            "mode='score' classifies by likelihood without generating; it has no "
            "structured-output form. Use a runner with likelihood_scoring (transformers, vllm) or "
            "mode='choice'"
        )


def to_vllm_sampling_structured_outputs(constraint: LabelConstraint) -> Any:
    """Build the real `StructuredOutputsParams` (imports vLLM; only inside a vLLM runner).

    Raises:
        MissingDependencyError: vLLM is not installed.
    """
    try:
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError as exc:
        from medbatch.errors import MissingDependencyError

        raise MissingDependencyError(
            "constrained decoding with vLLM", "vllm>=0.11", "vllm"
        ) from exc
    return StructuredOutputsParams(**to_vllm_structured_outputs(constraint))


def to_vllm_server_extra_body(constraint: LabelConstraint) -> dict[str, Any]:
    """The `extra_body` of a chat request to a vLLM OpenAI-compatible server.

    Example:
        >>> to_vllm_server_extra_body(LabelConstraint(labels=("NORMAL", "POST_MI")))
        {'structured_outputs': {'choice': ['NORMAL', 'POST_MI']}}
    """
    return {"structured_outputs": to_vllm_structured_outputs(constraint)}


def to_openai_response_format(
    constraint: LabelConstraint, *, name: str = DEFAULT_SCHEMA_NAME
) -> dict[str, Any]:
    """The `response_format` of an OpenAI(-compatible) chat request: a strict JSON schema.

    OpenAI has no "choice" constraint, so `choice` mode becomes `{"label": <enum>}`. Strict
    mode requires every property to be required and `additionalProperties: false`, which
    `LabelConstraint.json_schema()` guarantees.

    Example:
        >>> fmt = to_openai_response_format(LabelConstraint(labels=("NORMAL", "POST_MI")))
        >>> fmt["type"], fmt["json_schema"]["schema"]["properties"]["label"]["enum"]
        ('json_schema', ['NORMAL', 'POST_MI'])
    """
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "schema": choice_json_schema(constraint), "strict": True},
    }


def to_snowflake_response_format(
    constraint: LabelConstraint,
    *,
    flavor: Literal["openai", "cortex"] = "openai",
    name: str = DEFAULT_SCHEMA_NAME,
) -> dict[str, Any]:
    """The `response_format` for Snowflake.

    Args:
        constraint: The label constraint.
        flavor: `openai` for models served by `ModelVersion.run_batch` / SPCS with the vLLM
            engine, whose chat signature forwards OpenAI parameters (same shape as
            `to_openai_response_format`); `cortex` for Cortex `AI_COMPLETE`, which takes
            `{"type": "json", "schema": …}`.
        name: The schema name (OpenAI flavour only).
    """
    if flavor == "cortex":
        return {"type": "json", "schema": choice_json_schema(constraint)}
    return to_openai_response_format(constraint, name=name)


def unwrap_json_choice(
    text: str, constraint: LabelConstraint, metadata: MutableMapping[str, Any]
) -> str:
    """`{"label": "X"}` → `X`: the answer to a choice constraint sent as a JSON schema.

    OpenAI-style `response_format` (OpenAI, and Snowflake's vLLM engine) has no choice
    constraint, so choice mode rides on `choice_json_schema`; a server that honours it
    answers `{"label": "X"}`, which is unwrapped here so the answer reads as the bare label
    that choice mode promises. The raw JSON is kept in `metadata["raw_text"]`. Anything
    else (free text, another label, malformed JSON) is returned unchanged, so the caller
    still sees that the constraint was not applied.

    Example:
        >>> constraint = LabelConstraint(labels=("NORMAL", "POST_MI"))
        >>> unwrap_json_choice('{"label": "POST_MI"}', constraint, metadata := {})
        'POST_MI'
    """
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        return text
    label = payload.get("label") if isinstance(payload, dict) else payload
    if isinstance(label, str) and label in constraint.labels:
        metadata["raw_text"] = text
        return label
    return text


# --- transformers: a token trie over the label names --------------------------------------


class TokenizerLike(Protocol):
    """What `LabelTrie.from_tokenizer` needs: Hugging Face tokenizers have it."""

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]:
        """Token ids of `text`."""
        ...


@dataclass
class _Node:
    children: dict[int, _Node] = field(default_factory=dict)
    label: str | None = None  # set where a complete label ends


class LabelTrie:
    """A trie of the token sequences of every label, for `prefix_allowed_tokens_fn`.

    Each label is tokenised as written and with a leading space (tokenisers such as
    SentencePiece and BPE encode "POST_MI" and " POST_MI" differently, and a chat template
    may or may not leave a space). At a node where a complete label ends, the EOS token(s)
    are allowed too, so generation can stop after any label but never inside one.

    Example:
        ```python
        trie = LabelTrie.from_tokenizer(tokenizer, ["NORMAL", "POST_MI"], eos_token_id=2)
        model.generate(**inputs, max_new_tokens=trie.max_length + 1,
                       prefix_allowed_tokens_fn=trie.prefix_allowed_tokens_fn(
                           inputs["input_ids"].shape[1]))
        ```
    """

    def __init__(
        self, sequences: Mapping[str, Iterable[Sequence[int]]], eos_token_ids: Iterable[int]
    ) -> None:
        """Build from explicit token sequences.

        Args:
            sequences: For each label, one or more token-id sequences that spell it.
            eos_token_ids: Token ids that end generation (allowed after a complete label).

        Raises:
            ValueError: A label has no non-empty sequence, or no EOS id is given, or two
                labels share a token sequence.
        """
        self.eos_token_ids: tuple[int, ...] = tuple(dict.fromkeys(eos_token_ids))
        if not self.eos_token_ids:
            raise ValueError("LabelTrie needs at least one EOS token id to end an answer")
        self._root = _Node()
        self.variants: dict[str, tuple[tuple[int, ...], ...]] = {}
        for label, label_sequences in sequences.items():
            unique = tuple(dict.fromkeys(tuple(seq) for seq in label_sequences if len(seq) > 0))
            if not unique:
                raise ValueError(f"label {label!r} has no token sequence")
            self.variants[label] = unique
            for seq in unique:
                self._insert(label, seq)

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer: TokenizerLike,
        labels: Iterable[str],
        *,
        eos_token_id: int | Sequence[int] | None = None,
        leading_space: bool = True,
    ) -> LabelTrie:
        """Tokenise each label (and its leading-space variant) with `tokenizer`.

        Args:
            tokenizer: Anything with `encode(text, add_special_tokens=False)`.
            labels: The label names.
            eos_token_id: The EOS id(s); defaults to `tokenizer.eos_token_id`.
            leading_space: Also allow the " LABEL" tokenisation.

        Raises:
            ValueError: No EOS id is known.
        """
        if eos_token_id is None:
            eos_token_id = getattr(tokenizer, "eos_token_id", None)
        if eos_token_id is None:
            raise ValueError("pass eos_token_id: the tokenizer does not define one")
        eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        sequences: dict[str, list[list[int]]] = {}
        for label in labels:
            texts = [label, f" {label}"] if leading_space else [label]
            sequences[label] = [
                list(tokenizer.encode(text, add_special_tokens=False)) for text in texts
            ]
        return cls(sequences, eos)

    def _insert(self, label: str, sequence: tuple[int, ...]) -> None:
        node = self._root
        for token in sequence:
            node = node.children.setdefault(token, _Node())
        if node.label is not None and node.label != label:
            raise ValueError(
                f"labels {node.label!r} and {label!r} have the same tokens {list(sequence)}"
            )
        node.label = label

    @property
    def max_length(self) -> int:
        """The longest label in tokens (use `max_new_tokens=max_length + 1` for EOS)."""
        return max(len(seq) for seqs in self.variants.values() for seq in seqs)

    def _walk(self, generated: Sequence[int]) -> _Node | None:
        node = self._root
        for token in generated:
            child = node.children.get(token)
            if child is None:
                return None
            node = child
        return node

    def allowed(self, generated: Sequence[int]) -> list[int]:
        """Token ids allowed after `generated` (the new tokens so far).

        After a complete label, or once EOS has been produced, only EOS is allowed (a
        finished row of a batch keeps being asked while the others decode).
        """
        if generated and generated[-1] in self.eos_token_ids:
            return list(self.eos_token_ids)
        node = self._walk(generated)
        if node is None:
            return list(self.eos_token_ids)
        allowed = list(node.children)
        if node.label is not None:
            allowed.extend(self.eos_token_ids)
        return allowed

    def label_of(self, generated: Sequence[int]) -> str | None:
        """The label spelled by `generated` (trailing EOS ignored), or None if incomplete."""
        ids = list(generated)
        while ids and ids[-1] in self.eos_token_ids:
            ids.pop()
        node = self._walk(ids)
        return None if node is None else node.label

    def prefix_allowed_tokens_fn(self, prompt_length: int) -> Callable[[int, Any], list[int]]:
        """The callable for `model.generate(prefix_allowed_tokens_fn=...)`.

        Args:
            prompt_length: Length of the (left-padded) prompt `input_ids`; transformers
                passes the whole sequence, prompt included, for each batch row.
        """

        def allowed_tokens(batch_id: int, input_ids: Any) -> list[int]:
            del batch_id  # every row has the same constraint
            ids = input_ids.tolist() if hasattr(input_ids, "tolist") else list(input_ids)
            return self.allowed(ids[prompt_length:])

        return allowed_tokens
