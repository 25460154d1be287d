"""Corrective re-prompt: one bounded follow-up turn for answers without a verdict.

Chain-of-thought answers sometimes end without a verdict (cut off, or the model forgot to
conclude). Rather than guess, medbatch can ask once more, in the same conversation, for the
label only, with a small token budget. Both answers are kept and the method is recorded, so
a report can tell first-try verdicts from corrected ones.
"""

from __future__ import annotations

from medbatch.records import ChatMessage, InferenceRequest
from medbatch.tasks.base import Task

__all__ = ["REPROMPT_MAX_TOKENS", "follow_up_request"]

REPROMPT_MAX_TOKENS = 16
"""Token budget of the follow-up answer: a label name, nothing more."""


def follow_up_request(request: InferenceRequest, answer: str, task: Task) -> InferenceRequest:
    """The original conversation, the model's answer, and a request for the label only.

    The follow-up is constrained to the labels (the runner drops the constraint when it
    cannot decode with one).
    """
    names = ", ".join(task.labels.names)
    messages = (
        *request.messages,
        ChatMessage.text("assistant", answer or "(no answer)"),
        ChatMessage.text(
            "user",
            f"State your final classification as exactly one of: {names}. "
            "Reply with the label only.",
        ),
    )
    params = request.params.model_copy(
        update={"max_tokens": REPROMPT_MAX_TOKENS, "temperature": 0.0}
    )
    return request.model_copy(
        update={"messages": messages, "params": params, "constraint": task.constraint()}
    )
