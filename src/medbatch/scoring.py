"""Exact label scores from token log-probabilities.

Under constrained decoding the answer is one of the label strings, so the model's
probability of label *l* is the probability of its token sequence:

```
log p(l) = log Σ_variants exp( Σ_tokens log p(token | prefix) )
```

summed over tokenisation variants ("POST_MI" and " POST_MI" are different sequences of the
same answer). Normalising over the label set (a softmax of those log-probabilities) gives
`p(l | answer is a label)`, which sums to 1 and is what `InferenceResponse.label_scores`
holds. `label_probabilities` does this exactly; `label_scores_from_top_logprobs` is the
cheaper approximation available from an OpenAI-style `logprobs` block (see its limits).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from medbatch.labels import fold_label_text

__all__ = [
    "label_probabilities",
    "label_scores_from_top_logprobs",
    "logsumexp",
    "score_label_continuations",
    "sequence_logprob",
]


def logsumexp(values: Iterable[float]) -> float:
    """`log Σ exp(v)`, computed stably; `-inf` for no values or only `-inf`."""
    items = [float(v) for v in values]
    if not items:
        return -math.inf
    top = max(items)
    if top == -math.inf:
        return -math.inf
    if math.isnan(top) or top == math.inf:
        raise ValueError(f"log-probabilities must be finite or -inf, got {top}")
    return top + math.log(sum(math.exp(v - top) for v in items))


def sequence_logprob(token_logprobs: Iterable[float]) -> float:
    """The log-probability of a token sequence: the sum of its tokens' log-probabilities."""
    total = 0.0
    for value in token_logprobs:
        if math.isnan(value) or value > 0.0:
            raise ValueError(f"a token log-probability must be <= 0, got {value}")
        total += value
    return total


def label_probabilities(
    label_logprobs: Mapping[str, float | Sequence[float]],
) -> dict[str, float]:
    """Normalise per-label log-probabilities over the label set (softmax).

    Args:
        label_logprobs: For each label, its sequence log-probability, or several (one per
            tokenisation variant), which are combined with log-sum-exp. A label with no
            variant or only `-inf` gets probability 0.

    Returns:
        `{label: probability}` in the input order, summing to 1.

    Raises:
        ValueError: Empty input, every label impossible, or a non-finite positive value.

    Example:
        >>> probs = label_probabilities({"NORMAL": [-0.5, -2.0], "POST_MI": -1.2})
        >>> round(sum(probs.values()), 6)
        1.0
    """
    if not label_logprobs:
        raise ValueError("no labels to score")
    combined = {
        label: logsumexp([value] if isinstance(value, int | float) else value)
        for label, value in label_logprobs.items()
    }
    total = logsumexp(combined.values())
    if total == -math.inf:
        raise ValueError("every label has log-probability -inf; nothing to normalise")
    return {label: math.exp(value - total) for label, value in combined.items()}


def label_scores_from_top_logprobs(
    content: Sequence[Mapping[str, Any]],
    labels: Sequence[str],
    *,
    position: int | None = None,
) -> dict[str, float] | None:
    """Label scores from the `top_logprobs` of the token where the label starts.

    Reads an OpenAI-style `choices[0].logprobs.content` list (each item
    `{"token", "logprob", "top_logprobs": [{"token", "logprob"}, ...]}`), takes the
    alternatives at the label's first token, attributes each alternative to the label whose
    name starts with it (after case/separator folding), and normalises over the labels.

    Limits (why this is an approximation, unlike `label_probabilities`):
        - Exact only when every label is decided by its first token: labels that are single
          tokens, or whose first tokens all differ. If one alternative is a prefix of two
          labels (e.g. "POST" for POST_MI and POST_CABG) its mass cannot be split and None
          is returned.
        - Only the `top_logprobs` alternatives are seen (top-k); a label outside them gets 0.
        - Alternatives that start no label (e.g. "The") are dropped before normalising,
          which is right under a choice constraint and optimistic without one.

    Args:
        content: `logprobs.content` of one choice.
        labels: The label names.
        position: Index of the label's first token in `content`. By default it is found:
            after `"label": "` in a JSON answer, else the first non-blank token.

    Returns:
        `{label: probability}` summing to 1, or None when no alternative names a label or
        the mass is ambiguous.
    """
    if not content:
        return None
    index = _label_token_index(content) if position is None else position
    if not 0 <= index < len(content):
        return None
    alternatives = content[index].get("top_logprobs") or [content[index]]
    folded = {label: fold_label_text(label) for label in labels}
    per_label: dict[str, list[float]] = {label: [] for label in labels}
    seen_tokens: set[str] = set()
    for alternative in alternatives:
        token = str(alternative.get("token", ""))
        key = fold_label_text(token.strip().strip('"'))
        if not key or token in seen_tokens:
            continue
        seen_tokens.add(token)
        owners = [label for label, name in folded.items() if name.startswith(key)]
        if len(owners) > 1:
            return None
        if owners:
            per_label[owners[0]].append(float(alternative["logprob"]))
    if not any(per_label.values()):
        return None
    return label_probabilities(per_label)


def _label_token_index(content: Sequence[Mapping[str, Any]]) -> int:
    """Where the label starts: after `"label": "` if the answer is JSON, else first word."""
    text = ""
    starts = []
    for item in content:
        starts.append(len(text))
        text += str(item.get("token", ""))
    match = re.search(r'"label"\s*:\s*"', text)
    offset = match.end() if match else len(text) - len(text.lstrip(' \t\n"'))
    for i, start in enumerate(starts):
        end = start + len(str(content[i].get("token", "")))
        if end > offset and str(content[i].get("token", "")).strip(' \t\n"'):
            return i
    return 0


def score_label_continuations(
    model: Any,
    batch: Mapping[str, Any],
    variants: Sequence[tuple[str, tuple[int, ...]]],
    terminators: Sequence[int],
    *,
    pad_id: int,
    cache_kwarg: str = "past_key_values",
) -> list[tuple[dict[str, float], dict[str, tuple[int, ...]]]]:
    """Exact label probabilities from a causal model, in one prefill and one forward pass.

    For each row of `batch` (left-padded prompts, as `generate` takes them, plus what the
    answer held before the label), the score of a variant (a label's token sequence) is the
    model's log-probability of those tokens after the row and then of any of `terminators`
    (what must follow a complete label: end of turn in `choice` mode, the closing quote in
    `json` mode). Without the terminator a label that is a prefix of another (NORMAL,
    NORMAL_VARIANT) would always win. Variants of one label are summed; labels are normalised
    to sum to 1 (`label_probabilities`). Each row also gets, per label, its most probable
    variant (the tokens to write when that label is chosen). With no decode loop, the argmax
    is the cheapest exact classifier: one prefill of the prompt plus the K continuations.

    The prompt is run once with its KV cache kept; the cache is repeated once per variant and
    all continuations go through the model together. Needs torch (imported here).

    Args:
        model: A transformers model taking `input_ids`, `attention_mask`, `position_ids`
            (and images) and returning logits and a cache with `batch_repeat_interleave`.
        batch: The model inputs of the rows, with `input_ids` and `attention_mask`.
        variants: `(label, tokens)` pairs; several pairs may spell one label.
        terminators: Tokens any of which ends a complete label.
        pad_id: The token written in the padding of shorter variants.
        cache_kwarg: The forward argument that takes the cache (`cache` in transformers 5).

    Returns:
        Per row: the label probabilities, and each label's most probable token sequence.
    """
    import torch

    device = batch["input_ids"].device
    n_rows = int(batch["input_ids"].shape[0])
    mask = batch["attention_mask"]
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    count = len(variants)
    longest = max(len(tokens) for _, tokens in variants)
    with torch.inference_mode():
        prefill = model(**batch, position_ids=positions, use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(prefill.logits[:, -1, :].float(), dim=-1)
        cache = getattr(prefill, "cache", None) or prefill.past_key_values
        cache.batch_repeat_interleave(count)

        padded = torch.full((n_rows * count, longest), pad_id, dtype=torch.long, device=device)
        for row in range(n_rows):
            for index, (_, tokens) in enumerate(variants):
                padded[row * count + index, : len(tokens)] = torch.tensor(tokens)
        continuation_mask = torch.cat(
            [mask.repeat_interleave(count, dim=0), torch.ones_like(padded)], dim=1
        )
        continuation_positions = positions[:, -1:].repeat_interleave(count, dim=0) + 1
        continuation_positions = continuation_positions + torch.arange(longest, device=device)
        follow = model(
            input_ids=padded,
            attention_mask=continuation_mask,
            position_ids=continuation_positions,
            use_cache=True,
            **{cache_kwarg: cache},
        )
        after = torch.log_softmax(follow.logits.float(), dim=-1)

    terminator_index = torch.tensor(list(terminators), device=device)
    results: list[tuple[dict[str, float], dict[str, tuple[int, ...]]]] = []
    for row in range(n_rows):
        totals: dict[str, list[float]] = {}
        spelling: dict[str, tuple[float, tuple[int, ...]]] = {}
        for index, (label, tokens) in enumerate(variants):
            line = row * count + index
            logprob = first[row, tokens[0]]
            for step in range(1, len(tokens)):
                logprob = logprob + after[line, step - 1, tokens[step]]
            end = torch.logsumexp(after[line, len(tokens) - 1, terminator_index], dim=0)
            value = float(logprob + end)
            totals.setdefault(label, []).append(value)
            if label not in spelling or value > spelling[label][0]:
                spelling[label] = (value, tuple(tokens))
        results.append(
            (label_probabilities(totals), {label: seq for label, (_, seq) in spelling.items()})
        )
    return results
