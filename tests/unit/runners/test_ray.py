"""`RayRunner` on a local two-CPU Ray cluster: the runner contract, a crashed actor, resume."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from medbatch import ImageFolderDataset, classify, get_task
from medbatch.config import RunConfig, load_config
from medbatch.errors import ConfigError
from medbatch.records import InferenceRequest
from medbatch.runners.base import BatchRunner
from medbatch.store import PREDICTIONS
from medbatch.testing import FunctionRunner
from medbatch.testing.contracts import RunnerContract

ray = pytest.importorskip("ray", reason='the Ray back-end needs ray: pip install "medbatch[ray]"')

from medbatch.runners.ray import RayRunner, RayRunnerConfig  # noqa: E402

TASK = get_task("ecg")
VERDICT = "Rhythm regular.\n\n**FINAL CLASSIFICATION:** NORMAL"


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> Iterator[None]:
    # Unix socket paths must stay short: a temp dir of its own directly under /tmp.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the host
    # Actors unpickle the factories below, which live in this (not importable) test module.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    # ray.init installs its own SIGINT/SIGTERM handlers and leaves them: put ours back after,
    # so later tests (and classify's SIGTERM handling) see the process as it was.
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",  # loopback only: the tests' network guard allows it
        _temp_dir=temp_dir,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}},
    )
    try:
        yield
    finally:
        ray.shutdown()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        shutil.rmtree(temp_dir, ignore_errors=True)


class _Answer:
    """Factory of a `FunctionRunner` that answers NORMAL, and dies once on `crash_on`.

    The crash is `os._exit` inside the actor: the process is gone mid-batch, as with an
    out-of-memory kill. A marker file makes it happen once, so the rebuilt actor lives.
    """

    def __init__(self, crash_on: str | None = None, marker: Path | None = None) -> None:
        self.crash_on = crash_on
        self.marker = marker

    def _answer(self, request: InferenceRequest) -> str:
        if request.record_id == self.crash_on and self.marker and not self.marker.exists():
            self.marker.touch()
            os._exit(1)
        return VERDICT

    def __call__(self) -> BatchRunner:
        return FunctionRunner(self._answer, model_id="echo", batch_size=4)


class TestRayRunnerOverReplay(RunnerContract):
    """The TOML path: `[runner.inner]` names a registered runner and its settings."""

    decodes_images = False

    @pytest.fixture
    def runner(self, tmp_path: Path) -> RayRunner:
        recorded = tmp_path / "answers.jsonl"
        ids = [f"r{i}" for i in range(self.n_requests)] + ["ok-1", "ok-2", "broken", "same"]
        recorded.write_text(
            "".join(json.dumps({"record_id": i, "text": VERDICT}) + "\n" for i in ids)
        )
        return RayRunner(
            inner={"kind": "replay", "path": str(recorded), "model_id": "replayed"},
            num_actors=2,
            num_cpus=0.5,
            batch_size=2,
        )


class TestRayRunnerOverTransformers(RunnerContract):
    """One actor holding the real tiny VLM: images decoded, model run, inside Ray."""

    @pytest.fixture
    def runner(self, tiny_vlm_on_ray: RayRunner) -> RayRunner:
        return tiny_vlm_on_ray


@pytest.fixture(scope="module")
def tiny_vlm_on_ray(tiny_model_path: Path) -> Iterator[RayRunner]:
    # Loading torch and the model in a fresh actor takes seconds: one actor for the module
    # (start/close per test is covered by the replay case above).
    started = _StaysUp(
        inner={
            "kind": "transformers",
            "model": str(tiny_model_path),
            "device": "cpu",
            "batch_size": 4,
            "num_image_workers": 1,
        },
        num_actors=1,
        num_cpus=1,
        batch_size=4,
    )
    started.start()
    yield started
    RayRunner.close(started)


class _StaysUp(RayRunner):
    def close(self) -> None:
        """Left to the class fixture."""


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (seed * 20, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def ecg_folder(tmp_path: Path) -> Path:
    root = tmp_path / "ecg"
    for folder, count in (("normal_ecg_images", 7), ("post_mi_history_ecg_images", 5)):
        (root / folder).mkdir(parents=True)
        for i in range(count):
            (root / folder / f"{folder[:3]}({i}).png").write_bytes(_png(i + len(folder)))
    return root


def _dataset(root: Path) -> ImageFolderDataset:
    return ImageFolderDataset(root, TASK.folder_map, labels=TASK.labels)


def test_a_crashed_actor_fails_its_batch_once_and_a_retry_completes_it(
    ecg_folder: Path, tmp_path: Path
) -> None:
    dataset = _dataset(ecg_folder)
    ids = [record.id for record in dataset]
    victim = ids[5]
    marker = tmp_path / "crashed"
    store = tmp_path / "run"
    runner = RayRunner(
        factory=_Answer(crash_on=victim, marker=marker), num_actors=2, num_cpus=0.5, batch_size=2
    )

    first = classify(dataset, TASK, runner, store=store, canary=0)

    assert marker.exists()  # the actor really died mid-run
    predictions = first.predictions.set_index("record_id")
    assert sorted(predictions.index) == sorted(ids)
    failed = predictions[predictions["error_kind"].notna()]
    # Only the batches queued on the dead actor fail (the victim's batch of 2, and at most
    # max_batches_in_flight - 1 = 1 more batch waiting behind it), all retryable.
    assert victim in failed.index
    assert 2 <= len(failed) <= 4
    assert set(failed["error_kind"]) == {"runner_error"}
    lines = (store / PREDICTIONS).read_text().splitlines()
    stored = Counter(json.loads(line)["record_id"] for line in lines)
    assert stored == Counter(ids)  # streamed to the store, each record exactly once

    retried = classify(
        dataset,
        TASK,
        RayRunner(factory=_Answer(), num_actors=2, num_cpus=0.5, batch_size=2),
        store=store,
        retry_failed=True,
        canary=0,
    )
    assert retried.skipped == len(ids) - len(failed)
    assert retried.metrics["status_counts"].get("error", 0) == 0
    assert retried.predictions["record_id"].is_unique

    never_started = RayRunner(factory=_Answer(), num_actors=2, num_cpus=0.5)
    resumed = classify(dataset, TASK, never_started, store=store, canary=0)
    assert resumed.skipped == len(ids)
    assert never_started._actors == []  # nothing left to do: no actor was built


def test_when_every_actor_is_dead_the_rest_fails_once_each(tmp_path: Path) -> None:
    from medbatch.testing.contracts import make_request

    requests = [make_request(f"r{i}") for i in range(7)]
    runner = RayRunner(
        factory=_Answer(crash_on="r2", marker=tmp_path / "crashed"),
        num_actors=1,
        num_cpus=0.5,
        batch_size=2,
        max_restarts=0,
    )
    with runner:
        responses = list(runner.run(requests))
    assert Counter(r.record_id for r in responses) == Counter(r.record_id for r in requests)
    errors = {r.record_id: r.error for r in responses if r.error is not None}
    # r0-r1 usually succeed, but their answers can be lost with the process if it dies
    # before Ray has sent them back: then they fail too, still once each.
    assert {"r2", "r3", "r4", "r5", "r6"} <= set(errors)
    assert all(error.kind == "runner_error" and error.retryable for error in errors.values())
    assert "no actor left" in errors["r6"].message


def test_a_rebuilt_actor_answers_the_batches_after_its_crash(tmp_path: Path) -> None:
    from medbatch.testing.contracts import make_request

    requests = [make_request(f"r{i}") for i in range(12)]
    runner = RayRunner(
        factory=_Answer(crash_on="r2", marker=tmp_path / "crashed"),
        num_actors=1,
        num_cpus=0.5,
        batch_size=2,
        max_restarts=1,
    )
    with runner:
        responses = list(runner.run(requests))
    assert Counter(r.record_id for r in responses) == Counter(r.record_id for r in requests)
    failed = sorted(r.record_id for r in responses if r.error is not None)
    # The crash takes the batches queued on the actor (at most 2 of 2); one death counted,
    # so the rebuilt actor answers everything sent after it.
    assert "r2" in failed
    assert len(failed) <= 4
    assert all(r.error is None for r in responses if r.record_id in ("r8", "r9", "r10", "r11"))


def test_answers_stream_back_before_the_input_is_exhausted() -> None:
    from medbatch.testing.contracts import make_request

    read: list[str] = []

    def requests() -> Iterator[InferenceRequest]:
        for i in range(40):
            read.append(f"r{i}")
            yield make_request(f"r{i}")

    runner = RayRunner(factory=_Answer(), num_actors=2, num_cpus=0.5, batch_size=2)
    with runner:
        stream = runner.run(requests())
        first = next(stream)
        # At most num_actors * max_batches_in_flight batches (of 2) read ahead of an answer.
        assert first.record_id in read
        assert len(read) <= 2 * 2 * 2 + 2
        rest = list(stream)
    assert len(rest) + 1 == 40


def test_run_config_builds_a_ray_runner_with_a_checked_inner_table(tmp_path: Path) -> None:
    recorded = tmp_path / "answers.jsonl"
    recorded.write_text("")
    table: dict[str, Any] = {"kind": "ray", "num_actors": 3, "num_gpus": 1}
    base = {"output_dir": str(tmp_path), "task": {"name": "ecg"}, "dataset": {"root": "."}}

    table["inner"] = {"kind": "replay", "path": str(recorded), "model_id": "m"}
    runner = RunConfig.model_validate({**base, "runner": table}).build_runner()
    assert isinstance(runner, RayRunner)
    assert runner.model_id == "m"
    assert runner.describe()["inner"]["runner"] == "replay"
    assert runner.config.num_gpus == 1

    table["inner"] = {"kind": "replay", "pth": str(recorded)}
    with pytest.raises(ConfigError, match=r"\[runner.inner\] replay: .*pth"):
        RunConfig.model_validate({**base, "runner": table}).build_runner()
    with pytest.raises(ConfigError, match="pth"):  # the settings alone are checked too
        RayRunnerConfig.model_validate({"inner": table["inner"]})
    table["inner"] = {"kind": "ray"}
    with pytest.raises(ConfigError, match="cannot itself be"):
        RunConfig.model_validate({**base, "runner": table}).build_runner()
    table["inner"] = {"kind": "replay", "path": str(recorded)}
    table["num_actor"] = 2
    with pytest.raises(ConfigError, match="num_actor"):
        RunConfig.model_validate({**base, "runner": table}).build_runner()


def test_a_config_file_resolves_the_inner_runner_paths_next_to_it(tmp_path: Path) -> None:
    folder = tmp_path / "configs"
    (folder / "recorded").mkdir(parents=True)
    (folder / "recorded" / "answers.jsonl").write_text("")
    (folder / "run.toml").write_text(
        'output_dir = "out"\n[task]\nname = "ecg"\n[dataset]\nroot = "images"\n'
        '[runner]\nkind = "ray"\nnum_actors = 2\n'
        '[runner.inner]\nkind = "replay"\npath = "recorded/answers.jsonl"\n'
    )
    runner = load_config(folder / "run.toml").build_runner()
    assert isinstance(runner, RayRunner)
    assert runner.config.inner is not None
    assert runner.config.inner.options()["path"] == str(folder / "recorded" / "answers.jsonl")


def test_needs_exactly_one_of_inner_or_factory() -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        RayRunner()
    with pytest.raises(ConfigError, match="exactly one"):
        RayRunner(
            RayRunnerConfig(inner={"kind": "replay", "path": "x.jsonl"}),
            factory=_Answer(),
        )


def test_score_mode_through_ray_matches_the_runner_it_holds(
    tiny_vlm_on_ray: RayRunner, tiny_model_path: Path
) -> None:
    from medbatch.runners.transformers import TransformersRunner
    from medbatch.testing.contracts import make_request

    constraint = TASK.constraint(mode="score")
    requests = [
        make_request(f"s{i}").model_copy(update={"constraint": constraint}) for i in range(3)
    ]
    assert tiny_vlm_on_ray.capabilities.likelihood_scoring
    remote = {r.record_id: r for r in tiny_vlm_on_ray.run(requests)}
    with TransformersRunner(
        tiny_model_path, device="cpu", batch_size=4, num_image_workers=1
    ) as local_runner:
        local = {r.record_id: r for r in local_runner.run(requests)}
    assert sorted(remote) == sorted(local) == ["s0", "s1", "s2"]
    for record_id, response in remote.items():
        assert response.error is None
        assert response.usage is not None
        assert response.usage.completion_tokens == 0
        assert response.text == local[record_id].text
        assert response.label_scores is not None
        assert response.label_scores == pytest.approx(local[record_id].label_scores, abs=1e-5)
