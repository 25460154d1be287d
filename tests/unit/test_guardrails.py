"""Guardrails that make silent failures visible: canary, image probe, re-prompt, profiles."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from medbatch import AnswerStatus, ImageRef, ListDataset, Record, classify, get_task
from medbatch.canary import (
    CanaryFailedError,
    CanaryThresholds,
    ImageNotSeenError,
    evaluate_canary,
    text_only_twin,
)
from medbatch.errors import ConfigError
from medbatch.profiles import GEMMA3, GENERIC, profile_for
from medbatch.records import InferenceRequest, InferenceResponse, Usage
from medbatch.runners import RunnerCapabilities
from medbatch.testing import FunctionRunner

TASK = get_task("ecg")
EXPENSIVE = RunnerCapabilities(batching=True, expensive=True, constrained_decoding=True)


def _png(i: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (i % 256, 7, 9)).save(buffer, format="PNG")
    return buffer.getvalue()


def _dataset(n: int = 80) -> ListDataset:
    labels = TASK.labels.names
    records = [
        Record(id=f"r{i:03d}", image=ImageRef.from_bytes(_png(i)), label=labels[i % len(labels)])
        for i in range(n)
    ]
    return ListDataset(records, labels=TASK.labels)


def _usage_runner(
    image_tokens: int, answer: str = "FINAL CLASSIFICATION: NORMAL"
) -> FunctionRunner:
    """Reports prompt tokens like a server: text tokens + `image_tokens` per image."""

    def fn(request: InferenceRequest) -> InferenceResponse:
        text_tokens = sum(len(m.text_content.split()) for m in request.messages)
        prompt_tokens = text_tokens + image_tokens * len(request.images)
        return InferenceResponse(
            record_id=request.record_id,
            text=answer,
            finish_reason="stop",
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=3),
        )

    return FunctionRunner(
        fn, capabilities=EXPENSIVE, model_id="some-server-model", keep_requests=True
    )


def test_canary_runs_first_and_its_answers_are_reused(tmp_path: Path) -> None:
    runner = _usage_runner(image_tokens=256)
    result = classify(_dataset(), TASK, runner, store=tmp_path / "run")
    seen = [r.record_id for r in runner.requests_seen if "#" not in r.record_id]
    assert len(seen) == 80  # canary records were not asked twice
    assert len(set(seen)) == 80
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["canary"]["n"] == 8
    assert manifest["canary"]["image_seen"] is True
    assert (
        manifest["canary"]["prompt_tokens_with_image"]
        - manifest["canary"]["prompt_tokens_text_only"]
        == 256
    )
    assert len(result.predictions) == 80


def test_image_not_reaching_the_model_stops_the_run(tmp_path: Path) -> None:
    runner = _usage_runner(image_tokens=0)  # e.g. a server that drops image parts
    with pytest.raises(ImageNotSeenError, match="image did not reach the model"):
        classify(_dataset(), TASK, runner, store=tmp_path / "run")
    assert len([r for r in runner.requests_seen if "#" not in r.record_id]) == 8
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "canary_failed"


def test_unparseable_canary_stops_the_run() -> None:
    runner = _usage_runner(image_tokens=256, answer="I am not sure what this shows.")
    with pytest.raises(CanaryFailedError, match="coverage 0%"):
        classify(_dataset(), TASK, runner)


def test_ignored_constraint_fails_the_canary() -> None:
    runner = _usage_runner(image_tokens=256, answer="It looks NORMAL to me, honestly.")
    with pytest.raises(CanaryFailedError, match="ignores the constraint"):
        classify(_dataset(), TASK, runner, constrained=True)


def test_canary_is_off_for_cheap_runners_and_can_be_disabled() -> None:
    cheap = FunctionRunner(lambda r: "I am not sure.")
    classify(_dataset(), TASK, cheap)  # no canary: no error despite 0% coverage
    expensive = _usage_runner(image_tokens=0)
    result = classify(_dataset(), TASK, expensive, canary=0)
    assert len(result.predictions) == 80


def test_text_only_twin_drops_images_and_constraint() -> None:
    runner = _usage_runner(256)
    request = classify  # placeholder to keep imports honest
    del request
    dataset = _dataset(1)
    req = InferenceRequest(
        record_id="x",
        messages=TASK.prompt.render(next(iter(dataset))),
        constraint=TASK.constraint(),
    )
    twin = text_only_twin(req)
    assert twin.images == ()
    assert twin.constraint is None
    assert twin.params.max_tokens == 1
    assert runner.model_id


def test_reprompt_recovers_a_missing_verdict() -> None:
    def fn(request: InferenceRequest) -> InferenceResponse:
        if request.messages[-1].role == "user" and "Reply with the label only" in (
            request.messages[-1].text_content
        ):
            return InferenceResponse(record_id=request.record_id, text="POST_MI")
        return InferenceResponse(
            record_id=request.record_id,
            text="STEP 1: rate 70. STEP 4: Q waves in III and aVF...",
            finish_reason="length",
        )

    runner = FunctionRunner(keep_requests=True, fn=fn)
    result = classify(_dataset(4), TASK, runner, reprompt=True)
    frame = result.predictions
    assert (frame["label"] == "POST_MI").all()
    assert frame["method"].str.startswith("reprompt:").all()
    assert frame["text"].str.startswith("STEP 1").all()  # the first answer is kept
    follow_up = runner.requests_seen[-1]
    assert follow_up.params.max_tokens == 16
    assert [m.role for m in follow_up.messages][-2:] == ["assistant", "user"]


def test_reprompt_off_by_default_keeps_truncated_status() -> None:
    runner = FunctionRunner(
        lambda r: InferenceResponse(record_id=r.record_id, text="STEP 1:", finish_reason="length")
    )
    result = classify(_dataset(2), TASK, runner)
    assert set(result.predictions["status"]) == {AnswerStatus.TRUNCATED}


def test_gemma_profile_folds_the_system_prompt() -> None:
    runner = FunctionRunner(
        keep_requests=True,
        fn=lambda r: "FINAL CLASSIFICATION: NORMAL",
        model_id="google/medgemma-4b-it",
    )
    result = classify(_dataset(1), TASK, runner)
    messages = runner.requests_seen[0].messages
    assert [m.role for m in messages] == ["user"]
    assert messages[0].text_content.startswith(
        "You are a medical AI assistant specialized in ECG analysis.\n\nYou are a board-certified"
    )
    assert result.manifest.profile["name"] == "gemma3"
    other = FunctionRunner(keep_requests=True, fn=lambda r: "NORMAL", model_id="llava-1.6")
    classify(_dataset(1), TASK, other)
    assert [m.role for m in other.requests_seen[0].messages] == ["system", "user"]


def test_profiles_are_chosen_by_model_id_and_refuse_fp16() -> None:
    assert profile_for("google/medgemma-4b-it") is GEMMA3
    assert profile_for("/models/gemma-3-27b-it") is GEMMA3
    assert profile_for("Qwen/Qwen2.5-VL-7B") is GENERIC
    assert profile_for("/models/local-folder", model_type="gemma3") is GEMMA3
    with pytest.raises(ConfigError, match="overflow float16"):
        GEMMA3.check_dtype("torch.float16")
    GEMMA3.check_dtype("float16", force=True)
    GEMMA3.check_dtype("bfloat16")
    GENERIC.check_dtype("float16")


def test_evaluate_and_report_show_guardrails(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medbatch.cli import app
    from medbatch.evaluation import evaluate
    from medbatch.report import write_report

    answers = iter(["NORMAL", "POST_MI", "I believe it is POST_MI. FINAL CLASSIFICATION: POST_MI"])
    runner = _usage_runner(image_tokens=256)
    runner.fn = lambda request: InferenceResponse(  # type: ignore[assignment]
        record_id=request.record_id,
        text=next(answers, "NORMAL"),
        usage=Usage(prompt_tokens=400),
    )
    classify(_dataset(80), TASK, runner, store=tmp_path / "run", constrained=True, canary=0)
    guard = evaluate(tmp_path / "run", n_bootstrap=0).guardrails
    assert guard.constrained
    assert guard.constraint_ignored == 1
    assert guard.constraint_valid == 79
    assert guard.constraint_validity == pytest.approx(79 / 80)
    html = write_report(tmp_path / "run").read_text()
    assert "constraint validity" in html
    assert "1 ignored" in html
    out = CliRunner().invoke(app, ["evaluate", str(tmp_path / "run")])
    assert out.exit_code == 0, out.output
    assert "constraint validity: 98.8%" in out.output


def test_canary_report_is_shown(tmp_path: Path) -> None:
    from medbatch.evaluation import evaluate

    classify(_dataset(80), TASK, _usage_runner(image_tokens=256), store=tmp_path / "run")
    canary = evaluate(tmp_path / "run", n_bootstrap=0).guardrails.canary
    assert canary is not None
    assert canary["n"] == 8
    assert canary["failures"] == []


# -- thresholds and flags that must be able to fail (issue 15) -----------------------------


def _canary_frame(statuses: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "status": statuses,
            "method": ["final-heading"] * len(statuses),
            "error_message": ["HTTP 503" if s == "error" else None for s in statuses],
        }
    )


@pytest.mark.parametrize(
    ("errors", "passed"),
    [(2, True), (3, False)],  # 2 of 8 is 25%: at the threshold, allowed; 3 of 8 is not
)
def test_canary_error_rate_threshold(errors: int, passed: bool) -> None:
    statuses = ["error"] * errors + ["parsed"] * (8 - errors)
    report = evaluate_canary(
        _canary_frame(statuses), thresholds=CanaryThresholds(), constrained=False
    )
    assert report.error_rate == errors / 8
    assert report.coverage >= 0.5  # only the error rate can fail it
    assert report.passed is passed
    if not passed:
        assert report.failures == ["error rate 38% > 25% (e.g. HTTP 503)"]


def test_failing_requests_stop_the_run_at_the_canary(tmp_path: Path) -> None:
    failures = iter(range(3))

    def fn(request: InferenceRequest) -> str | InferenceResponse:
        if next(failures, None) is not None:  # the first 3 canary requests fail
            return InferenceResponse.failure(request.record_id, "request_failed", "HTTP 503")
        return "FINAL CLASSIFICATION: NORMAL"

    runner = FunctionRunner(keep_requests=True, fn=fn, capabilities=EXPENSIVE)
    with pytest.raises(CanaryFailedError, match="error rate 38% > 25%"):
        classify(_dataset(), TASK, runner, store=tmp_path / "run")
    assert len(runner.requests_seen) == 8


def test_rows_whose_image_was_dropped_are_flagged_and_counted(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medbatch.cli import app
    from medbatch.evaluation import evaluate
    from medbatch.report import write_report

    dropped = {f"r{i:03d}" for i in range(40, 45)}  # the server drops these images

    def fn(request: InferenceRequest) -> InferenceResponse:
        text_tokens = sum(len(m.text_content.split()) for m in request.messages)
        image_tokens = 0 if request.record_id in dropped else 256 * len(request.images)
        return InferenceResponse(
            record_id=request.record_id,
            text="FINAL CLASSIFICATION: NORMAL",
            usage=Usage(prompt_tokens=text_tokens + image_tokens),
        )

    runner = FunctionRunner(fn, capabilities=EXPENSIVE, model_id="some-server-model")
    result = classify(_dataset(), TASK, runner, store=tmp_path / "run")
    flagged = {
        row.record_id
        for row in result.predictions.itertuples()
        if json.loads(row.metadata or "{}").get("image_not_seen")
    }
    assert flagged == dropped
    assert evaluate(tmp_path / "run", n_bootstrap=0).guardrails.image_not_seen == 5
    html = write_report(tmp_path / "run", n_bootstrap=0).read_text()
    assert "<td>images not seen by the model</td><td>5</td>" in html
    out = CliRunner().invoke(app, ["evaluate", str(tmp_path / "run"), "--bootstrap", "0"])
    assert "images not seen by the model: 5" in out.output
