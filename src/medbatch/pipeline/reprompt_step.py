"""The re-prompt step of a run: one bounded follow-up turn for answers without a verdict.

A function over the run's `_RunLoop`; both answers are kept, and the method is recorded.
"""

from __future__ import annotations

from medbatch.pipeline.loop import _REPROMPTABLE, _Pending, _RunLoop
from medbatch.records import AnswerStatus
from medbatch.reprompt import follow_up_request

__all__: list[str] = []  # internal: a step of `classify`


def reprompt_unparsed(loop: _RunLoop) -> None:
    """One bounded follow-up turn for answers without a verdict."""
    follow_ups = []
    for record_id in loop.record_order:
        prediction = loop.collector.by_id.get(record_id)
        request = loop.requests_by_id.get(record_id)
        if prediction is None or request is None:
            continue
        if prediction.status in _REPROMPTABLE:
            follow_ups.append(follow_up_request(request, prediction.text or "", loop.task))
    if not follow_ups:
        return
    loop._start_runner()
    constrained = loop.runner.capabilities.constrained_decoding
    for request in follow_ups:
        first = loop.collector.by_id[request.record_id]
        loop.pending[request.record_id] = _Pending(
            first.image_sha256, first.truth, {**first.metadata}
        )
    for response in loop.runner.run(
        request if constrained else request.model_copy(update={"constraint": None})
        for request in follow_ups
    ):
        first = loop.collector.by_id[response.record_id]
        second = loop._predict(response.record_id, response)
        if second.status is AnswerStatus.PARSED:
            merged = second.model_copy(
                update={
                    "text": first.text,
                    "finish_reason": first.finish_reason,
                    "method": f"reprompt:{second.method}",
                    "metadata": {**second.metadata, "reprompt_answer": response.text},
                }
            )
        else:
            merged = first.model_copy(
                update={"metadata": {**first.metadata, "reprompt_answer": response.text}}
            )
        loop.collector.add(merged)
