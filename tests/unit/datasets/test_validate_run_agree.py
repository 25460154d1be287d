"""`validate` and `run` agree on what is an error (issue 15, item 8).

Every record `validate_dataset` calls an error is a record `classify` answers with an
`image_error`, and every other record is answered; nothing in the folder vanishes from one
and not the other (broken links, link loops); an empty dataset is an error for both.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from medbatch import ImageFolderDataset, classify, get_task
from medbatch.cli import app
from medbatch.datasets.validation import EMPTY_DATASET, validate_dataset
from medbatch.errors import DatasetError
from medbatch.runners.openai import OpenAICompatibleRunner
from medbatch.testing.bad_images import bomb_png
from medbatch.testing.openai_server import OpenAITestServer

TASK = get_task("ecg")
NORMAL = "normal_ecg_images"


def _png(size: tuple[int, int], color: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (color, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def hostile_folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    folder = root / NORMAL
    folder.mkdir(parents=True)
    (folder / "good.png").write_bytes(_png((64, 48)))
    (folder / "one_pixel.png").write_bytes(_png((1, 1)))
    (folder / "strip.png").write_bytes(_png((20_000, 200)))
    (folder / "empty.png").write_bytes(b"")
    (folder / "not_an_image.png").write_bytes(b"hello, world")
    (folder / "truncated.png").write_bytes(_png((64, 48), 3)[:60])
    (folder / "bomb.png").write_bytes(bomb_png())
    os.symlink(tmp_path / "unmounted" / "scan.png", folder / "dangling.png")
    os.symlink("loop.png", folder / "loop.png")  # a link to itself: ELOOP on every read
    return root


@pytest.fixture
def server_runner() -> Iterator[OpenAICompatibleRunner]:
    # A real back-end's image path (encode, shrink, send), so "what the run fails on" is
    # what a run really fails on, not what a test double chooses.
    with OpenAITestServer(answer=lambda body: "FINAL CLASSIFICATION: NORMAL") as server:
        yield OpenAICompatibleRunner(base_url=server.base_url, model="m", api_key_env=None)


def _dataset(root: Path) -> ImageFolderDataset:
    return ImageFolderDataset(root, TASK.folder_map, labels=TASK.labels)


def test_validate_errors_are_exactly_the_records_a_run_fails(
    hostile_folder: Path, server_runner: OpenAICompatibleRunner
) -> None:
    dataset = _dataset(hostile_folder)
    report = validate_dataset(dataset, labels=TASK.labels)
    result = classify(dataset, TASK, server_runner, canary=0)

    frame = result.predictions.set_index("record_id")
    failed = set(frame.index[frame["error_kind"] == "image_error"])
    errors = {issue.record_id for issue in report.errors}
    assert errors == failed
    ids = {f"{NORMAL}/{name}.png" for name in ("dangling", "loop", "empty", "bomb")}
    assert ids <= errors
    # Nothing vanished: every file and link in the folder is a record of both.
    assert len(frame) == report.total == 9
    answered = set(frame.index[frame["status"] == "parsed"])
    assert answered == {f"{NORMAL}/{name}.png" for name in ("good", "one_pixel", "strip")}
    warnings = {(issue.record_id, issue.kind) for issue in report.warnings}
    assert (f"{NORMAL}/one_pixel.png", "too_small") in warnings
    assert (f"{NORMAL}/strip.png", "too_large") in warnings


def test_broken_links_name_their_target(hostile_folder: Path) -> None:
    report = validate_dataset(_dataset(hostile_folder), labels=TASK.labels)
    by_id = {issue.record_id: issue for issue in report.errors}
    assert "broken symbolic link" in by_id[f"{NORMAL}/dangling.png"].message
    assert "unmounted" in by_id[f"{NORMAL}/dangling.png"].message
    assert "broken symbolic link" in by_id[f"{NORMAL}/loop.png"].message


def test_a_class_folder_on_an_unmounted_share_is_a_dataset_error(tmp_path: Path) -> None:
    root = tmp_path / "images"
    (root / NORMAL).mkdir(parents=True)
    (root / NORMAL / "a.png").write_bytes(_png((40, 40)))
    os.symlink(tmp_path / "share" / "post_mi", root / "post_mi_history_ecg_images")
    with pytest.raises(DatasetError, match="post_mi_history_ecg_images is a broken symbolic"):
        list(_dataset(root))


def test_linked_class_folders_are_read_and_folder_loops_skipped(tmp_path: Path) -> None:
    share = tmp_path / "share" / "mi"
    share.mkdir(parents=True)
    (share / "b.png").write_bytes(_png((40, 40)))
    root = tmp_path / "images"
    (root / NORMAL).mkdir(parents=True)
    (root / NORMAL / "a.png").write_bytes(_png((40, 40)))
    os.symlink(share, root / "post_mi_history_ecg_images")
    os.symlink(root, root / NORMAL / "back-to-root")  # a loop through the tree
    ids = [record.id for record in _dataset(root)]
    assert ids == [f"{NORMAL}/a.png", "post_mi_history_ecg_images/b.png"]


def test_an_empty_dataset_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "images" / NORMAL).mkdir(parents=True)
    report = validate_dataset(_dataset(tmp_path / "images"))
    assert not report.ok
    assert [(issue.record_id, issue.kind) for issue in report.errors] == [
        (EMPTY_DATASET, "no_records")
    ]


def _config(tmp_path: Path, images: Path, *, limit: int | None = None) -> Path:
    (tmp_path / "answers.jsonl").write_text("")
    config = tmp_path / "run.toml"
    config.write_text(
        'output_dir = "out"\n'
        + (f"limit = {limit}\n" if limit else "")
        + f'[task]\nname = "ecg"\n[dataset]\nkind = "folder"\nroot = "{images}"\n'
        '[runner]\nkind = "replay"\npath = "answers.jsonl"\n'
    )
    return config


def test_cli_validate_fails_on_an_empty_dataset(tmp_path: Path) -> None:
    (tmp_path / "images" / NORMAL).mkdir(parents=True)
    result = CliRunner().invoke(app, ["validate", str(_config(tmp_path, tmp_path / "images"))])
    assert result.exit_code == 1, result.output
    assert "no_records" in result.output


def test_cli_validate_checks_only_the_records_run_would_run(tmp_path: Path) -> None:
    folder = tmp_path / "images" / NORMAL
    folder.mkdir(parents=True)
    for i in range(3):
        (folder / f"a{i}.png").write_bytes(_png((40, 40), i))
    (folder / "z-broken.png").write_bytes(b"")  # sorted last: outside the first 3
    images = tmp_path / "images"
    cli = CliRunner()
    assert cli.invoke(app, ["validate", str(_config(tmp_path, images))]).exit_code == 1
    limited = cli.invoke(app, ["validate", str(_config(tmp_path, images, limit=3))])
    assert limited.exit_code == 0, limited.output
    assert "3 records" in " ".join(limited.output.split())
    flag = cli.invoke(app, ["validate", str(_config(tmp_path, images)), "--limit", "3"])
    assert flag.exit_code == 0, flag.output
