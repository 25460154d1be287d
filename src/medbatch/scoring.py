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
