"""Exact and near duplicates, conflicts, and `dedupe`."""

from __future__ import annotations

import io

from PIL import Image

from medbatch.datasets.base import ListDataset
from medbatch.datasets.duplicates import dedupe, find_duplicates, perceptual_signature
from medbatch.datasets.synthetic import render_ecg_page
from medbatch.records import ImageRef, Record


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _records() -> list[Record]:
    page_a = render_ecg_page("NORMAL", seed=1, size=(553, 393))
    page_b = render_ecg_page("NORMAL", seed=2, size=(553, 393))
    a, b = _jpeg(page_a, 90), _jpeg(page_b, 90)
    return [
        Record(id="a1", image=ImageRef.from_bytes(a), label="NORMAL"),
        Record(id="b1", image=ImageRef.from_bytes(b), label="NORMAL"),
        Record(id="a2", image=ImageRef.from_bytes(a), label="NORMAL"),
        Record(id="a3", image=ImageRef.from_bytes(a), label="POST_MI"),
        Record(
            id="a_small",
            image=ImageRef.from_bytes(_jpeg(page_a.resize((400, 284)), 70)),
            label="NORMAL",
        ),
        Record(id="gone", image=ImageRef.from_path("/nonexistent/x.jpg"), label="NORMAL"),
    ]


def test_exact_groups_conflicts_and_unreadable() -> None:
    report = find_duplicates(_records())

    assert report.total == 6
    assert report.distinct == 3
    (group,) = report.groups
    assert group.record_ids == ("a1", "a2", "a3")
    assert group.is_conflict
    assert group.distinct_labels == ("NORMAL", "POST_MI")
    assert report.copies == 2
    assert [rid for rid, _ in report.unreadable] == ["gone"]
    kinds = [(e.record_id, e.kind) for e in report.record_errors()]
    assert kinds == [("a2", "duplicate"), ("a3", "duplicate"), ("a1", "label_conflict")]


def test_near_duplicates_survive_resizing_and_reencoding_but_distinct_pages_do_not() -> None:
    report = find_duplicates(_records(), near=True)

    assert [g.record_ids for g in report.near_groups] == [("a1", "a_small")]
    page = render_ecg_page("POST_MI", seed=3, size=(553, 393))
    same = perceptual_signature(page) @ perceptual_signature(page.resize((300, 213)))
    other = perceptual_signature(page) @ perceptual_signature(
        render_ecg_page("POST_MI", seed=4, size=(553, 393))
    )
    assert same >= 0.97 > 0.9 > other  # 0.97: find_duplicates' default threshold


def test_dedupe_keeps_one_per_content_and_notes_the_copies() -> None:
    dataset = ListDataset(_records())
    unique = list(dedupe(dataset))

    assert [r.id for r in unique] == ["a1", "b1", "a_small", "gone"]
    assert unique[0].metadata["copies"] == ["a2", "a3"]
    assert unique[0].metadata["conflicting_labels"] == ["NORMAL", "POST_MI"]
    assert [r.id for r in dedupe(dataset, keep="last")][:2] == ["b1", "a3"]
    assert "a1" not in [r.id for r in dedupe(dataset, conflicts="drop")]
