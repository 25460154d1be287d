"""The page builder and template on hand-built predictions: evidence spans, escaping."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from medbatch.evaluation import evaluate
from medbatch.report.build import render_page
from medbatch.report.figures import build_figures
from medbatch.report.page import highlight, page_context

# The verdict word occurs three times: the parser's span is the first one (inside the
# brackets, which must stay escaped), so a page that searched for the last occurrence
# would mark the wrong place.
ANSWER = "Considered <POST_MI> POST_MI first; ruled out later, POST_MI is not it."
FIRST = ANSWER.index("POST_MI")


def _frame(**evidence_columns: list[Any]) -> pd.DataFrame:
    rows = {
        "record_id": ["a/b/r1.png", "r2"],
        "truth": ["POST_MI", "NORMAL"],
        "label": ["POST_MI", "NORMAL"],
        "status": ["parsed", "parsed"],
        "text": [ANSWER, "Looks NORMAL to me."],
        "evidence": ["POST_MI", "NORMAL"],
        "error_message": [None, None],
        "metadata": [None, None],
        "image_sha256": ["s1", "s2"],
    }
    frame: pd.DataFrame = pd.DataFrame({**rows, **evidence_columns})
    return frame


def _answers(frame: pd.DataFrame) -> tuple[str, str]:
    """The raw-answer HTML of record r1 (POST_MI) and r2 (NORMAL)."""
    ev = evaluate(frame, n_bootstrap=0)
    context = page_context(
        evaluation=ev,
        frame=frame,
        manifest=None,
        figures=build_figures(ev),
        images_root=None,
        examples_per_cell=3,
        run_name="hand-built",
    )
    page = render_page(**context)
    answers = re.findall(r"<pre>(.*?)</pre>", page, flags=re.S)
    (first,) = [a for a in answers if "Considered" in a]
    (second,) = [a for a in answers if "Looks" in a]
    return first, second


def _marked(answer_html: str) -> tuple[int, str]:
    """Where the <mark> starts in the unescaped answer, and what it holds."""
    import html

    before, rest = answer_html.split("<mark>", 1)
    inside = rest.split("</mark>", 1)[0]
    return len(html.unescape(before)), html.unescape(inside)


def test_the_parsers_exact_span_is_highlighted() -> None:
    frame = _frame(evidence_start=[FIRST, 6], evidence_end=[FIRST + 7, 12])
    first, second = _answers(frame)
    assert _marked(first) == (FIRST, "POST_MI")
    assert first.count("<mark>") == 1
    assert first.startswith("Considered &lt;<mark>")  # the text around it stays escaped
    assert "<POST" not in first
    assert _marked(second) == (6, "NORMAL")


def test_without_offsets_the_last_occurrence_is_highlighted() -> None:
    last = ANSWER.rindex("POST_MI")
    assert last != FIRST
    for frame in (_frame(), _frame(evidence_start=[None, None], evidence_end=[None, None])):
        first, _ = _answers(frame)
        assert _marked(first) == (last, "POST_MI")


def test_one_missing_offset_falls_back() -> None:
    frame = _frame(evidence_start=[FIRST, None], evidence_end=[None, 12])
    first, second = _answers(frame)
    assert _marked(first) == (ANSWER.rindex("POST_MI"), "POST_MI")
    assert _marked(second) == (6, "NORMAL")


@pytest.mark.parametrize("span", [(5, 200), (-1, 3), (8, 8), (9, 4)])
def test_offsets_outside_the_text_fall_back(span: tuple[int, int]) -> None:
    pieces = highlight("abc NORMAL def", "NORMAL", span)
    assert pieces == (("abc ", False), ("NORMAL", True), (" def", False))


def test_nothing_is_marked_without_evidence() -> None:
    assert highlight("no verdict here", None) == (("no verdict here", False),)
    assert highlight("no verdict here", "NORMAL") == (("no verdict here", False),)


def test_the_report_reads_the_predictions_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import medbatch.report.build as build
    import medbatch.store as store
    from medbatch.datasets.sample import load_ecg_sample
    from medbatch.pipeline import classify
    from medbatch.tasks.registry import get_task

    dataset, runner = load_ecg_sample()
    classify(dataset, get_task("ecg"), runner, store=tmp_path, progress=False)
    calls: list[Path] = []
    real = store.load_predictions

    def counting(run_dir: str | Path) -> pd.DataFrame:
        calls.append(Path(run_dir))
        return real(run_dir)

    # Both the report's own import and the one evaluation makes at call time.
    monkeypatch.setattr(store, "load_predictions", counting)
    monkeypatch.setattr(build, "load_predictions", counting)
    page = build.write_report(tmp_path, n_bootstrap=0).read_text("utf-8")
    assert calls == [tmp_path]
    assert "Screening view: any abnormal vs NORMAL" in page  # the manifest still applied


def test_the_report_uses_only_public_names_of_evaluation() -> None:
    import ast

    import medbatch.evaluation as evaluation
    import medbatch.report as report

    folder = Path(report.__file__).parent
    used: set[str] = set()
    for source in folder.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "medbatch.evaluation"
            ):
                assert node.module == "medbatch.evaluation", (source.name, node.module)
                used |= {alias.name for alias in node.names}
    assert used
    assert used <= set(evaluation.__all__)
