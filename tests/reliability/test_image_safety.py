"""Images: no process-wide side effects, and one pixel limit on every path that sends bytes.

Promises checked (issue 17, items 1 and 2):
- decoding CMYK, 16-bit, RGBA, WebP, GIF and over-limit images on 8 threads at once leaves
  `warnings.filters` exactly as it was (the same objects in the same order), and every
  image gets the same outcome in every round;
- a decompression bomb (a 10000 × 10000 greyscale PNG that is small on disk) is refused the
  same way (`image_error`, not retryable, the same message) whatever the runner — one that
  decodes, one that sends the file unchanged, one that uploads it — and never reaches the
  back-end; each image function refuses it too, whether the host's warning filters ignore
  Pillow's warning or make it an error;
- the report's thumbnail step refuses an over-limit image and shrinks the others before
  converting them to RGB (peak memory measured in a fresh process).
"""

from __future__ import annotations

import base64
import io
import struct
import subprocess
import sys
import textwrap
import warnings
import zlib
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
from PIL import Image

from medbatch import ImageFolderDataset, classify, get_task
from medbatch.errors import ImageLoadError
from medbatch.images import (
    check_pixels,
    encode_image,
    inspect_image,
    load_image,
    thumbnail,
    to_data_url,
)
from medbatch.records import ImageRef
from medbatch.runners.base import BatchRunner
from medbatch.testing.bad_images import bomb_png, png_chunk
from medbatch.testing.function_runner import FunctionRunner
from medbatch.testing.openai_server import OpenAITestServer

BOMB_SIDE = 10_000  # 100 MP: between Pillow's limit (89.5 MP) and twice it, so it only warns


def grey_bomb_png(side: int = BOMB_SIDE) -> bytes:
    """A complete 8-bit greyscale PNG of `side` × `side` black pixels (~100 KB for 100 MP).

    Greyscale and complete, so it is exactly what an unchanged pass-through would send.
    """
    row = b"\x00" + b"\x00" * side
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def _encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _odd_images() -> list[tuple[str, bytes]]:
    """40 images of the kinds that are normalised (and two over the limit)."""
    ramp = np.linspace(0, 65535, 96 * 64, dtype=np.uint16).reshape(64, 96)
    kinds = [
        ("cmyk.jpg", _encoded(Image.new("CMYK", (96, 64), (0, 120, 60, 0)), "JPEG")),
        ("sixteen.png", _encoded(Image.fromarray(ramp), "PNG")),
        ("alpha.png", _encoded(Image.new("RGBA", (96, 64), (255, 0, 0, 10)), "PNG")),
        ("photo.webp", _encoded(Image.effect_noise((96, 64), 40).convert("RGB"), "WEBP")),
        ("anim.gif", _encoded(Image.new("P", (96, 64), 3), "GIF")),
    ]
    images = [(f"{i:02d}-{name}", data) for i in range(7) for name, data in kinds]
    images += [(f"{i:02d}-bomb.png", grey_bomb_png()) for i in range(3)]
    images += [(f"{i:02d}-huge.png", bomb_png(40_000)) for i in range(2)]
    return images


def _outcome(call: Callable[[], object]) -> str:
    try:
        call()
    except ImageLoadError as exc:
        return "bomb" if "decompression-bomb limit" in str(exc) else f"error: {exc}"
    return "ok"


def test_concurrent_decoding_leaves_warning_filters_unchanged() -> None:
    images = _odd_images()
    assert len(images) == 40

    def decode_all(name: str, data: bytes) -> tuple[str, ...]:
        ref = ImageRef.from_bytes(data, media_type=None)
        info = inspect_image(ref)
        return (
            _outcome(lambda: load_image(ref)),
            _outcome(lambda: encode_image(ref)),  # the unchanged pass-through path
            _outcome(lambda: encode_image(ref, max_side=48)),
            _outcome(lambda: to_data_url(ref)),
            "bomb" if info.problem == "decompression_bomb" else str(info.ok),
        )

    before = list(warnings.filters)
    rounds = []
    for _ in range(3):
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = pool.map(decode_all, *zip(*images, strict=True))
            outcomes = dict(zip([n for n, _ in images], results, strict=True))
        rounds.append(outcomes)
        after = list(warnings.filters)
        assert after == before, f"warnings.filters changed: {after[:3]} ..."
        assert all(a is b for a, b in zip(after, before, strict=True))
    assert rounds[0] == rounds[1] == rounds[2], "every image gets the same outcome every time"
    for name, outcome in rounds[0].items():
        expected = "bomb" if "bomb" in name or "huge" in name else "ok"
        assert set(outcome) <= {expected, "True"}, (name, outcome)


HostFilter = Literal["ignore", "error"]


@pytest.mark.parametrize("host_filter", ["ignore", "error"])
def test_every_image_function_refuses_the_bomb(tmp_path: Path, host_filter: HostFilter) -> None:
    """A notebook that ignores warnings and a test run that makes them errors: same refusal."""
    path = tmp_path / "bomb.png"
    path.write_bytes(grey_bomb_png())
    data_url = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
    refs = {
        "path": ImageRef.from_path(path),
        "bytes": ImageRef.from_bytes(path.read_bytes(), media_type="image/png"),
        "data url": ImageRef.from_url(data_url),
    }
    # The test thread is the only one here, so changing its filters for the block is safe.
    with warnings.catch_warnings():
        warnings.simplefilter(host_filter)
        for where, ref in refs.items():
            calls: dict[str, Callable[[], object]] = {
                "check_pixels": partial(check_pixels, ref),
                "to_data_url": partial(to_data_url, ref),
                "to_data_url 896": partial(to_data_url, ref, max_side=896),
            }
            if where != "data url":
                calls |= {
                    "encode_image": partial(encode_image, ref),
                    "load_image": partial(load_image, ref),
                    "thumbnail": partial(thumbnail, ref, 460),
                }
            for name, call in calls.items():
                assert _outcome(call) == "bomb", f"{name} on {where} let the bomb through"
            if where != "data url":
                assert inspect_image(ref).problem == "decompression_bomb"


def _bomb_folder(root: Path) -> Path:
    folder = root / "images" / "normal_ecg_images"
    folder.mkdir(parents=True)
    for i in range(3):
        image = Image.new("L", (32, 24), 40 * i)
        (folder / f"good{i}.png").write_bytes(_encoded(image, "PNG"))
    (folder / "bomb.png").write_bytes(grey_bomb_png())
    (folder / "huge.png").write_bytes(bomb_png(40_000))
    return root / "images"


@pytest.fixture
def ecg_bombs(tmp_path: Path) -> ImageFolderDataset:
    task = get_task("ecg")
    return ImageFolderDataset(_bomb_folder(tmp_path), task.folder_map, labels=task.labels)


def _function_runner() -> Iterator[tuple[BatchRunner, Callable[[], int]]]:
    runner = FunctionRunner(lambda request: "FINAL CLASSIFICATION: NORMAL")
    yield runner, lambda: runner.requests_count


def _openai(model: str) -> Callable[[], Iterator[tuple[BatchRunner, Callable[[], int]]]]:
    def make() -> Iterator[tuple[BatchRunner, Callable[[], int]]]:
        from medbatch.runners.openai import OpenAICompatibleRunner

        with OpenAITestServer(
            lambda body: "FINAL CLASSIFICATION: NORMAL", max_lifetime_s=60
        ) as server:
            runner = OpenAICompatibleRunner(
                base_url=server.base_url, model=model, api_key_env=None, concurrency=8
            )
            yield runner, lambda: len(server.requests_seen)

    return make


def _vllm() -> Iterator[tuple[BatchRunner, Callable[[], int]]]:
    from medbatch.runners.vllm import VLLMRunner
    from medbatch.testing.fake_vllm import fake_vllm

    with fake_vllm(lambda conversation, params: "FINAL CLASSIFICATION: NORMAL") as fake:
        runner = VLLMRunner(model="plain/vision-model")  # no native size: sent unchanged
        yield runner, lambda: sum(len(c.conversations) for c in fake.chat_calls)


def _snowflake() -> Iterator[tuple[BatchRunner, Callable[[], int]]]:
    pytest.importorskip("snowflake.ml.model")
    from medbatch.runners.snowflake import SnowflakeBatchRunner
    from medbatch.testing.snowflake import FakeSnowflake

    fake = FakeSnowflake(answer=lambda messages, params: "FINAL CLASSIFICATION: NORMAL")
    runner = SnowflakeBatchRunner(
        session=fake.session,
        model_version=fake.model_version,
        job_getter=fake.get_job,
        specs=fake.model_version.specs,
        sleep=lambda s: None,
        database="DB",
        model="MEDGEMMA",
        version="V1",
        compute_pool="POOL",
        progress=False,
    )

    def sent() -> int:
        return sum(len(call["X"].to_pandas()) for call in fake.model_version.calls)

    yield runner, sent


RUNNERS: dict[str, Callable[[], Iterator[tuple[BatchRunner, Callable[[], int]]]]] = {
    "function (never decodes)": _function_runner,
    "openai, unknown model (sends files unchanged)": _openai("plain-model"),
    "openai, medgemma (shrinks to 896)": _openai("medgemma-test"),
    "vllm (data URLs, unchanged)": _vllm,
    "snowflake (stage upload)": _snowflake,
}


@pytest.mark.parametrize("host_filter", ["ignore", "error"])
def test_a_bomb_is_refused_the_same_way_by_every_runner(
    ecg_bombs: ImageFolderDataset, host_filter: HostFilter
) -> None:
    task = get_task("ecg")
    seen: dict[str, dict[str, tuple[Any, ...]]] = {}
    for name, make in RUNNERS.items():
        factory = make()
        assert isinstance(factory, Generator)
        runner, sent = next(factory)
        with warnings.catch_warnings():
            warnings.simplefilter(host_filter)
            result = classify(ecg_bombs, task, runner, canary=0, progress=False)
        rows = result.predictions.set_index("record_id")
        assert sent() == 3, f"{name}: only the three good images reach the back-end"
        factory.close()
        seen[name] = {
            str(rid): (row.status, row.error_kind, row.error_message, row.retryable)
            for rid, row in rows.iterrows()
            if "bomb" in str(rid) or "huge" in str(rid)
        }
        assert (rows.drop(index=list(seen[name]))["status"] == "parsed").all(), name
    first = next(iter(seen.values()))
    assert len(first) == 2
    for status, kind, message, retryable in first.values():
        assert (status, kind, retryable) == ("error", "image_error", False)
        assert "decompression-bomb limit" in message
    for name, refusals in seen.items():
        assert refusals == first, f"{name} refuses the bomb differently"


def test_the_transformers_runner_refuses_a_bomb_like_the_others(
    ecg_bombs: ImageFolderDataset, tiny_model_path: Path
) -> None:
    """The in-process back-end (which decodes): same refusal, and the bomb never reaches it."""
    pytest.importorskip("transformers", reason="TransformersRunner needs the `local` extra")
    from medbatch.runners.transformers import TransformersRunner

    class Counting(TransformersRunner):
        reached: list[str] = []  # noqa: RUF012 - one test, one class

        def _run_batch(self, requests: Any) -> Any:
            self.reached.extend(request.record_id for request in requests)
            return super()._run_batch(requests)

    task = get_task("ecg")
    runner = Counting(str(tiny_model_path), device="cpu")
    result = classify(ecg_bombs, task, runner, canary=0, progress=False, constrained=True)
    rows = result.predictions.set_index("record_id")
    assert sorted(Counting.reached) == sorted(str(r) for r in rows.index if "good" in str(r))
    reference = classify(
        ecg_bombs, task, FunctionRunner(lambda request: "NORMAL"), canary=0, progress=False
    ).predictions.set_index("record_id")
    for rid in ("bomb", "huge"):
        [key] = [r for r in rows.index if rid in str(r)]
        got = rows.loc[key, ["status", "error_kind", "error_message", "retryable"]].tolist()
        want = reference.loc[key, ["status", "error_kind", "error_message", "retryable"]]
        assert got == want.tolist()
        assert got[:2] == ["error", "image_error"]


def test_the_openai_runner_refuses_a_bomb_it_would_send_unchanged(tmp_path: Path) -> None:
    """The runner on its own (no pipeline in front): the pass-through path checks too."""
    from medbatch.runners.openai import OpenAICompatibleRunner
    from medbatch.testing.contracts import make_request

    path = tmp_path / "bomb.png"
    path.write_bytes(grey_bomb_png())
    request = make_request("bomb", image=ImageRef.from_path(path))
    with OpenAITestServer(lambda body: "FINAL CLASSIFICATION: NORMAL", max_lifetime_s=60) as server:
        with OpenAICompatibleRunner(
            base_url=server.base_url, model="plain-model", api_key_env=None
        ) as runner:
            (response,) = list(runner.run([request]))
        assert server.requests_seen == [], "the bomb never reached the server"
    assert response.error is not None
    assert (response.error.kind, response.error.retryable) == ("image_error", False)
    assert "decompression-bomb limit" in response.error.message


_PEAK = textwrap.dedent(
    """
    import resource, sys
    from medbatch.errors import ImageLoadError
    from medbatch.images import thumbnail
    from medbatch.records import ImageRef
    from PIL import Image
    if len(sys.argv) > 2:
        Image.MAX_IMAGE_PIXELS = int(sys.argv[2])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        size = thumbnail(ImageRef.from_path(sys.argv[1]), 460).size
    except ImageLoadError as exc:
        size = "refused" if "decompression-bomb limit" in str(exc) else repr(exc)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(size, (peak - base) * 1024)
    """
)


def _thumbnail_peak(path: Path, *limit: int) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, str(path), *map(str, limit)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    size, peak = done.stdout.rsplit(maxsplit=1)
    return size, int(peak)


def test_report_thumbnails_refuse_over_limit_and_never_make_a_full_size_rgb_copy(
    tmp_path: Path,
) -> None:
    side = 6000  # 36 MP greyscale: 36 MB decoded, 108 MB as a full-size RGB copy
    path = tmp_path / "scan.png"
    path.write_bytes(grey_bomb_png(side))
    size, peak = _thumbnail_peak(path)
    assert size == "(460, 460)"
    assert peak < 2 * side * side, f"peak {peak / 1e6:.0f} MB: more than decode + shrink"

    refused, peak = _thumbnail_peak(path, side * side - 1)  # one pixel over the limit
    assert refused == "refused"
    assert peak < 8 * 1024 * 1024, "refused from the header, before decoding"
