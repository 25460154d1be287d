"""The canary step of a run: a stratified subset first, and the image probe.

A function over the run's `_RunLoop` (it streams through the loop, so canary answers are
stored like any other and the main pass reuses them).
"""

from __future__ import annotations

from medbatch.canary import (
    CanaryFailedError,
    CanaryThresholds,
    ImageNotSeenError,
    canary_subset,
    evaluate_canary,
    probe_image_seen,
)
from medbatch.pipeline.loop import _RunLoop
from medbatch.records import InferenceResponse, Usage
from medbatch.store import predictions_to_frame

__all__: list[str] = []  # internal: a step of `classify`


def run_canary(loop: _RunLoop, size: int, thresholds: CanaryThresholds) -> None:
    """Run a stratified subset first; stop with a report if it fails.

    Canary answers are stored like any other, so the main pass reuses them.
    """
    subset = canary_subset(loop.dataset, size)
    loop._stream(subset, record_order=[], keep_requests=True)
    ids = [record.id for record in subset]
    answered = [loop.collector.by_id.get(rid) or loop.done.get(rid) for rid in ids]
    frame = predictions_to_frame([p.to_row() for p in answered if p is not None])
    probe: tuple[bool | None, int | None, int | None] = (None, None, None)
    for prediction in answered:
        request = loop.requests_by_id.get(prediction.record_id) if prediction else None
        if prediction is not None and request is not None and not prediction.is_error:
            response = InferenceResponse(
                record_id=prediction.record_id,
                usage=Usage(prompt_tokens=prediction.prompt_tokens),
            )
            probe = probe_image_seen(loop.runner, request, response)
            break
    loop.text_only_tokens = probe[2] if probe[0] else None
    report = evaluate_canary(
        frame,
        thresholds=thresholds,
        constrained=loop.constraint is not None,
        image_probe=probe,
    )
    loop.manifest.canary = report.model_dump(mode="json")
    loop.collector.flush()
    loop.done.update(loop.collector.by_id)
    if loop.store is not None:
        loop.store.write_manifest(loop.manifest)
    if not report.passed:
        error_cls = ImageNotSeenError if report.image_seen is False else CanaryFailedError
        loop.stop_status = "canary_failed"
        raise error_cls(report)
