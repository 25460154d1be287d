"""One batch through the model: generated tokens, label scores, `InferenceResponse`s.

With a label constraint and `score_labels`, each row's label probabilities come from the
unconstrained model (`medbatch.scoring.score_label_continuations`); with greedy decoding the
answer's label is their argmax, so accuracy and ROC describe the same classifier. A greedy
`choice` answer needs no decoding at all: one prefill plus the label continuations.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from medbatch.records import (
    GenerationParams,
    InferenceRequest,
    InferenceResponse,
    LabelConstraint,
    Usage,
)
from medbatch.runners._hf.constraints import ConstraintProgram, Tracker, answer_with
from medbatch.runners._hf.inputs import collate, extend_inputs
from medbatch.runners._hf.loading import Loaded, Prepared
from medbatch.scoring import score_label_continuations

if TYPE_CHECKING:
    import torch

# Continuations scored in one forward pass (prompt rows x label variants); bounds the memory
# of the expanded KV cache and the logits (variants x tokens x vocabulary).
MAX_SCORING_ROWS = 64


def generate(
    loaded: Loaded,
    rows: list[tuple[InferenceRequest, Prepared]],
    params: GenerationParams,
    constraint: LabelConstraint | None,
    started: float,
    *,
    score_labels: bool,
    string_tokens: Callable[[], Any],
) -> Iterator[InferenceResponse]:
    """Answer rows that share decoding settings and a tensor layout, as one batch.

    `string_tokens` gives the JSON-string-safe token ids (built once per runner, on demand).
    In `score` mode nothing is generated: the answer is the argmax label of the exact scores
    (whatever the temperature, and even with `score_labels` off), with no completion tokens.
    """
    program = ConstraintProgram.build(constraint, loaded, string_tokens)
    if program is not None and constraint is not None and constraint.mode == "score":
        yield from _score(loaded, rows, program, started)
        return
    kwargs: dict[str, Any] = {
        "max_new_tokens": params.max_tokens,
        "pad_token_id": loaded.pad_id,
        "eos_token_id": list(loaded.end_ids),
    }
    if params.temperature == 0.0:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    else:
        kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        kwargs["top_k"] = None
    if params.stop:
        kwargs.update(stop_strings=list(params.stop), tokenizer=loaded.tokenizer)
    greedy = params.temperature == 0.0
    scoring = program is not None and score_labels
    if scoring and greedy and program is not None and program.trie is not None:
        # Greedy choice: the answer is the argmax of the exact label scores, so the label
        # and its scores never disagree; no decoding is needed.
        scores, best = label_scores(
            loaded, rows, program, dict.fromkeys(range(len(rows)), 0), [[] for _ in rows]
        )
        generated = [
            answer_with(program, [], best[row], params.max_tokens) for row in range(len(rows))
        ]
    else:
        batch = collate([prepared for _, prepared in rows], loaded)
        generated, scores = decode(loaded, rows, batch, params, program, kwargs, scoring)

    elapsed = time.perf_counter() - started
    for row, ((request, prepared), tokens) in enumerate(zip(rows, generated, strict=True)):
        text, finish_reason, completion_tokens = finish(tokens, params, loaded, program is not None)
        yield InferenceResponse(
            record_id=request.record_id,
            text=text,
            finish_reason=finish_reason,
            usage=Usage(prompt_tokens=prepared.prompt_tokens, completion_tokens=completion_tokens),
            label_scores=scores[row],
            latency_s=elapsed,
            metadata={"batch_rows": len(rows), **prepared.provenance},
        )


def _score(
    loaded: Loaded,
    rows: list[tuple[InferenceRequest, Prepared]],
    program: ConstraintProgram,
    started: float,
) -> Iterator[InferenceResponse]:
    """`score` mode: the label is the argmax of the exact label scores; nothing is decoded."""
    scores, _ = label_scores(
        loaded, rows, program, dict.fromkeys(range(len(rows)), 0), [[] for _ in rows]
    )
    elapsed = time.perf_counter() - started
    for row, (request, prepared) in enumerate(rows):
        row_scores = scores[row]
        assert row_scores is not None  # every row starts its label at once in score mode
        yield InferenceResponse(
            record_id=request.record_id,
            # The label name itself (the spelling's decoded text may carry a leading space).
            text=max(row_scores, key=row_scores.__getitem__),
            finish_reason="stop",
            usage=Usage(prompt_tokens=prepared.prompt_tokens, completion_tokens=0),
            label_scores=row_scores,
            latency_s=elapsed,
            metadata={"batch_rows": len(rows), **prepared.provenance},
        )


def decode(
    loaded: Loaded,
    rows: list[tuple[InferenceRequest, Prepared]],
    batch: dict[str, torch.Tensor],
    params: GenerationParams,
    program: ConstraintProgram | None,
    kwargs: dict[str, Any],
    scoring: bool,
) -> tuple[list[list[int]], list[dict[str, float] | None]]:
    """Generate the batch (constrained if asked) and score the labels it reached."""
    import torch

    prompt_length = int(batch["input_ids"].shape[1])
    tracker: Tracker | None = None
    if program is not None and program.trie is not None:
        kwargs["prefix_allowed_tokens_fn"] = program.trie.prefix_allowed_tokens_fn(prompt_length)
    elif program is not None:
        tracker = Tracker(program, prompt_length)
        kwargs["prefix_allowed_tokens_fn"] = tracker

    devices = [loaded.device] if loaded.device.type == "cuda" else []
    with torch.inference_mode(), torch.random.fork_rng(devices=devices):
        if params.seed is not None:
            torch.manual_seed(params.seed)
        output = loaded.model.generate(**batch, **kwargs)
    generated: list[list[int]] = output[:, prompt_length:].tolist()

    scores: list[dict[str, float] | None] = [None] * len(rows)
    if program is None or not scoring:
        return generated, scores
    # In choice mode the label is the whole answer; in JSON it starts where the tracker
    # saw the label's opening quote close (a row cut off before it has no scores).
    starts = dict.fromkeys(range(len(rows)), 0) if tracker is None else tracker.label_start
    scores, best = label_scores(loaded, rows, program, starts, generated)
    if params.temperature == 0.0 and tracker is not None:
        # Greedy JSON: the label written is the argmax of the scores, after the same
        # reasoning; what follows a label is fixed (`"}` and the end), so the answer is
        # what constrained decoding gives when it picks that label.
        for row, label_tokens in best.items():
            start = starts[row]
            generated[row] = answer_with(
                program, generated[row][:start], label_tokens, params.max_tokens
            )
    return generated, scores


def label_scores(
    loaded: Loaded,
    rows: list[tuple[InferenceRequest, Prepared]],
    program: ConstraintProgram,
    starts: dict[int, int],
    generated: list[list[int]],
) -> tuple[list[dict[str, float] | None], dict[int, tuple[int, ...]]]:
    """Each row's label probabilities given what preceded its label (empty in `choice`).

    Returns:
        The scores (None for a row whose label never started), and for each scored row
        the tokens of its most probable label (that label's most probable spelling).
    """
    contexts: list[list[int] | None] = []
    for row, tokens in enumerate(generated):
        start = starts.get(row)
        contexts.append(None if start is None else tokens[:start])
    wanted = [row for row, context in enumerate(contexts) if context is not None]
    scores: list[dict[str, float] | None] = [None] * len(rows)
    best: dict[int, tuple[int, ...]] = {}
    per_chunk = max(1, MAX_SCORING_ROWS // len(program.score_variants))
    for first in range(0, len(wanted), per_chunk):
        chunk = wanted[first : first + per_chunk]
        chunk_scores = score_prepared(
            loaded,
            [rows[row][1] for row in chunk],
            [contexts[row] or [] for row in chunk],
            program.score_variants,
            program.terminators,
        )
        for row, (row_scores, spellings) in zip(chunk, chunk_scores, strict=True):
            scores[row] = row_scores
            # The first label wins a tie, as max() keeps the first maximum.
            best[row] = spellings[max(row_scores, key=row_scores.__getitem__)]
    return scores, best


def score_prepared(
    loaded: Loaded,
    prepared: Sequence[Prepared],
    contexts: Sequence[Sequence[int]],
    variants: Sequence[tuple[str, tuple[int, ...]]],
    terminators: Sequence[int],
) -> list[tuple[dict[str, float], dict[str, tuple[int, ...]]]]:
    """`score_label_continuations` for prepared records, each followed by its context.

    `contexts[row]` is what the answer held before the label (empty in `choice` mode).
    """
    extended = [
        Prepared(
            inputs=extend_inputs(item.inputs, list(context)),
            prompt_tokens=item.prompt_tokens + len(context),
        )
        for item, context in zip(prepared, contexts, strict=True)
    ]
    return score_label_continuations(
        loaded.model,
        collate(extended, loaded),
        variants,
        terminators,
        pad_id=loaded.pad_id,
        cache_kwarg=loaded.cache_kwarg,
    )


def finish(
    tokens: list[int], params: GenerationParams, loaded: Loaded, constrained: bool
) -> tuple[str, str, int]:
    """Text, finish reason and token count of one generated row (padding after the end)."""
    end = next((index for index, token in enumerate(tokens) if token in loaded.end_ids), None)
    if end is not None:
        body, finish_reason, count = tokens[:end], "stop", end + 1
    else:
        body = tokens
        while body and body[-1] == loaded.pad_id and loaded.pad_id not in loaded.end_ids:
            body = body[:-1]
        count = len(body)
        finish_reason = "length" if count >= params.max_tokens else "stop"
    text = str(loaded.tokenizer.decode(body, skip_special_tokens=True))
    for stop in params.stop:
        cut = text.find(stop)
        if cut >= 0:
            text, finish_reason = text[:cut], "stop"
    if constrained and finish_reason == "stop":
        # The trie may allow a leading space variant; the answer itself is the label.
        text = text.strip()
    return text, finish_reason, count
