"""A `LabelConstraint` as token rules for `generate`, and what label scoring needs from it.

`choice` mode is the shared label trie (`medbatch.constraints.LabelTrie`); `json` mode is a
small automaton over fixed pieces, a JSON string and the label trie (`ConstraintProgram`),
followed row by row during `generate` (`Tracker`).

Why hand-written, not a grammar engine: the grammar is three fixed pieces, one free string
and a choice between token sequences, and exact label scoring needs what this program knows
directly: where each row's label starts and which token sequences spell each label. xgrammar
0.2.9 (the engine vLLM uses) requires triton on Linux x86-64 (a GPU compiler, pulled into
every CPU install of the `local` extra) and apache-tvm-ffi; llguidance (vLLM's `guidance`
back-end) installs alone and is the candidate for the `json` mode.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from medbatch.constraints import LabelTrie
from medbatch.records import LabelConstraint
from medbatch.runners._hf.loading import Loaded

if TYPE_CHECKING:
    import torch


@dataclass
class _Segment:
    kind: Literal["fixed", "choice", "string"]
    tokens: tuple[int, ...] = ()
    trie: dict[tuple[int, ...], set[int]] = field(default_factory=dict)
    complete: set[tuple[int, ...]] = field(default_factory=set)


@dataclass
class _State:
    segment: int
    prefix: tuple[int, ...] = ()


@dataclass
class ConstraintProgram:
    """A `LabelConstraint` as token rules for `generate`, and what label scoring needs.

    `choice`: the shared `LabelTrie` (`medbatch.constraints`), then an end token.
    `json`: a small automaton over segments, `{"label": "` [label trie] `"}` (with
    `{"reasoning": "` [JSON-string-safe tokens] `", ` before it when `reasoning` is set),
    then an end token.
    """

    segments: list[_Segment]
    end_ids: tuple[int, ...]
    string_tokens: Any
    score_variants: list[tuple[str, tuple[int, ...]]]
    terminators: tuple[int, ...]
    trie: LabelTrie | None = None
    """Set in `choice` mode, where the label trie alone is the program."""

    @classmethod
    def build(
        cls, constraint: LabelConstraint | None, loaded: Loaded, string_tokens: Any
    ) -> ConstraintProgram | None:
        if constraint is None:
            return None
        tokenizer = InContext(loaded.tokenizer)

        def encode(text: str) -> tuple[int, ...]:
            return tuple(tokenizer.encode(text))

        if constraint.mode in ("choice", "score"):
            # The shared label trie (label and " label" spellings, EOS after a complete label)
            # is the whole program; its variants are what the scores sum over.
            trie = LabelTrie.from_tokenizer(
                tokenizer, constraint.labels, eos_token_id=loaded.end_ids
            )
            variants = [(label, seq) for label, seqs in trie.variants.items() for seq in seqs]
            return cls([], loaded.end_ids, None, variants, loaded.end_ids, trie)
        # In JSON the label sits between quotes: only its own spelling is valid.
        trie = LabelTrie.from_tokenizer(
            tokenizer, constraint.labels, eos_token_id=loaded.end_ids, leading_space=False
        )
        variants = [(label, seq) for label, seqs in trie.variants.items() for seq in seqs]
        choice = _choice_segment([seq for _, seq in variants])
        closing = _Segment("fixed", encode('"}'))
        segments = [_Segment("fixed", encode('{"label": "')), choice, closing]
        if constraint.reasoning:
            segments = [
                _Segment("fixed", encode('{"reasoning": "')),
                _Segment("string"),
                _Segment("fixed", encode('", "label": "')),
                choice,
                closing,
            ]
        strings = string_tokens() if constraint.reasoning else None
        return cls(segments, loaded.end_ids, strings, variants, closing.tokens[:1])

    def allowed(self, state: _State) -> Any:
        if state.segment >= len(self.segments):
            return list(self.end_ids)
        segment = self.segments[state.segment]
        if segment.kind == "fixed":
            return [segment.tokens[len(state.prefix)]]
        if segment.kind == "string":
            following = self.allowed(_State(state.segment + 1))
            return _union(self.string_tokens, following)
        options = set(segment.trie.get(state.prefix, set()))
        if state.prefix in segment.complete:
            options.update(self.allowed(_State(state.segment + 1)))
        return sorted(options)

    def advance(self, state: _State, token: int) -> _State:
        if state.segment >= len(self.segments):
            return state
        segment = self.segments[state.segment]
        following = _State(state.segment + 1)
        if segment.kind == "fixed":
            prefix = (*state.prefix, token)
            return (
                following if len(prefix) >= len(segment.tokens) else _State(state.segment, prefix)
            )
        if segment.kind == "string":
            # The string ends with the token that opens what follows it (the closing quote).
            leaves = token in self.allowed(following)
            return self.advance(following, token) if leaves else state
        if token in segment.trie.get(state.prefix, set()):
            return _State(state.segment, (*state.prefix, token))
        return self.advance(following, token)

    def choice_index(self) -> int:
        return next(index for index, seg in enumerate(self.segments) if seg.kind == "choice")


class InContext:
    """Tokenises a piece of an answer as it reads after other text, not as a text's start.

    SentencePiece-style tokenizers (Llama 2, so LLaVA 1.5; Mistral) prepend a space to the
    start of a text: `encode('"}')` is `▁" }`, which decodes to ` "}` mid-answer and turns
    `{"label": "NORMAL"}` into `{"label": " NORMAL "}`. Encoding after a newline and dropping
    the newline's tokens gives the in-context tokens; where the newline merges with the text
    (Gemma's `\n\n`) plain encoding is already right and is used.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.eos_token_id = tokenizer.eos_token_id
        self._base = list(tokenizer.encode("\n", add_special_tokens=False))
        self._base_text = str(tokenizer.decode(self._base))

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        del add_special_tokens  # never: these are pieces of an answer
        full = [int(i) for i in self.tokenizer.encode("\n" + text, add_special_tokens=False)]
        base = len(self._base)
        if full[:base] == self._base and str(self.tokenizer.decode(full)) == self._base_text + text:
            return full[base:]
        return [int(i) for i in self.tokenizer.encode(text, add_special_tokens=False)]


def _choice_segment(sequences: Iterable[tuple[int, ...]]) -> _Segment:
    trie: dict[tuple[int, ...], set[int]] = {}
    complete: set[tuple[int, ...]] = set()
    for tokens in sequences:
        for length in range(len(tokens)):
            trie.setdefault(tokens[:length], set()).add(tokens[length])
        complete.add(tokens)
    return _Segment("choice", trie=trie, complete=complete)


def _union(tokens: Any, extra: list[int]) -> Any:
    import torch

    combined: Any = torch.cat([tokens, torch.tensor(extra, dtype=torch.long)])
    return combined.unique()


class Tracker:
    """`prefix_allowed_tokens_fn` for `generate`: follows each row through the program.

    Keeps each row's state and advances it by the newest token, so a step costs O(1) rather
    than replaying the answer. Records where each row's label began (for label scoring).
    """

    def __init__(self, program: ConstraintProgram, prompt_length: int) -> None:
        self.program = program
        self.prompt_length = prompt_length
        self.states: dict[int, tuple[int, _State]] = {}
        self.label_start: dict[int, int] = {}
        self._choice = program.choice_index()
        self._allowed_cache: dict[tuple[int, tuple[int, ...]], Any] = {}

    def __call__(self, batch_id: int, sequence: torch.Tensor) -> Any:
        generated = sequence.shape[-1] - self.prompt_length
        seen, state = self.states.get(batch_id, (0, _State(0)))
        if seen < generated:
            tail = sequence[self.prompt_length + seen :].tolist()
            for token in tail:
                state = self.program.advance(state, int(token))
                seen += 1
                self._note_label_start(batch_id, state, seen)
        if generated == 0:
            self._note_label_start(batch_id, state, 0)
        self.states[batch_id] = (seen, state)
        key = (state.segment, state.prefix)
        if key not in self._allowed_cache:
            self._allowed_cache[key] = self.program.allowed(state)
        return self._allowed_cache[key]

    def _note_label_start(self, batch_id: int, state: _State, position: int) -> None:
        if state.segment == self._choice and not state.prefix:
            self.label_start.setdefault(batch_id, position)


def answer_with(
    program: ConstraintProgram,
    context: list[int],
    label_tokens: tuple[int, ...],
    max_tokens: int,
) -> list[int]:
    """The constrained answer that writes `label_tokens` after `context`, cut at `max_tokens`.

    After the label the program is fixed (`"}` in JSON mode) and then ends, so this is
    exactly what constrained decoding produces when it picks that label.
    """
    tail: list[int] = []
    if program.trie is None:  # JSON: the fixed segments after the label
        for segment in program.segments[program.choice_index() + 1 :]:
            tail.extend(segment.tokens)
    return [*context, *label_tokens, *tail, program.end_ids[0]][:max_tokens]


def json_string_tokens(tokenizer: Any) -> Any:
    """Token ids that may appear inside a JSON string (no quote, backslash, control)."""
    import torch

    size = len(tokenizer)
    special = set(tokenizer.all_special_ids)
    texts = tokenizer.batch_decode([[index] for index in range(size)])
    allowed = [
        index
        for index, text in enumerate(texts)
        if index not in special
        and text
        and not any(char in '"\\' or ord(char) < 0x20 for char in text)
    ]
    return torch.tensor(allowed, dtype=torch.long)
