from __future__ import annotations

import pytest

from medbatch import ChatPromptTemplate, ImageRef, Label, LabelSet, Record, get_task, list_tasks
from medbatch.errors import UnknownNameError
from medbatch.parsing.answer import FinalAnswerParser
from medbatch.tasks import Task, register_task
from medbatch.tasks.ecg import ECG_COT_PROMPT

NOTEBOOK_PROMPT_START = "You are a board-certified cardiologist performing a systematic ECG"


def test_ecg_task_matches_the_notebook() -> None:
    task = get_task("ecg")
    assert task.labels.names == (
        "MYOCARDIAL_INFARCTION",
        "POST_MI",
        "ABNORMAL_HEARTBEAT",
        "NORMAL",
    )
    assert task.prompt_version == "cot-v1"
    assert ECG_COT_PROMPT.startswith(NOTEBOOK_PROMPT_START)
    assert "Is the rhythm regular or irregular? \n" in ECG_COT_PROMPT  # verbatim, spaces too
    assert task.folder_map["post_mi_history_ecg_images"] == "POST_MI"
    record = Record(id="x", image=ImageRef.from_stage("@S/x.jpg"))
    messages = task.prompt.render(record)
    assert messages[0].role == "system"
    assert messages[0].text_content == "You are a medical AI assistant specialized in ECG analysis."
    assert messages[1].text_content == ECG_COT_PROMPT
    assert messages[1].images == (record.image,)


def test_ecg_parser_takes_the_final_verdict_not_the_first_label() -> None:
    text = (
        "The options are NORMAL, ABNORMAL_HEARTBEAT, MYOCARDIAL_INFARCTION and POST_MI.\n"
        "Rhythm is irregular, so this is not NORMAL.\n\n"
        "**FINAL CLASSIFICATION:** ABNORMAL_HEARTBEAT"
    )
    result = get_task("ecg").parser.parse(text)
    assert result.label == "ABNORMAL_HEARTBEAT"
    assert result.status == "parsed"
    assert result.method


def test_direct_prompt_lists_the_labels() -> None:
    task = get_task("ecg", prompt="direct-v1")
    text = task.prompt.render(Record(id="x", image=ImageRef.from_stage("@S/x")))[-1].text_content
    for name in task.labels.names:
        assert f"**{name}**" in text
    assert task.prompt.fingerprint != get_task("ecg").prompt.fingerprint


def test_unknown_task_suggests_close_names() -> None:
    with pytest.raises(UnknownNameError, match=r"Did you mean: ecg\?"):
        get_task("ekg")
    with pytest.raises(UnknownNameError, match="prompt version"):
        get_task("ecg", prompt="cot-v9")


def test_register_a_task_by_code() -> None:
    labels = LabelSet(labels=(Label(name="NORMAL"), Label(name="PNEUMONIA")))
    task = Task(
        name="cxr-test",
        labels=labels,
        prompts={"v1": ChatPromptTemplate("Is it {label_names}?", labels=labels)},
        prompt_version="v1",
        parser=FinalAnswerParser(labels),
        folder_map={"NORMAL": "NORMAL", "PNEUMONIA": "PNEUMONIA"},
    )
    register_task(task)
    assert "cxr-test" in list_tasks()
    assert get_task("cxr-test") is task


def test_folder_map_must_name_known_labels() -> None:
    labels = LabelSet.from_names(["A"])
    with pytest.raises(ValueError, match="unknown labels"):
        Task(
            name="t",
            labels=labels,
            prompts={"v": ChatPromptTemplate("x")},
            prompt_version="v",
            parser=FinalAnswerParser(labels),
            folder_map={"b": "B"},
        )


def test_fold_system_merges_into_first_user_turn() -> None:
    prompt = ChatPromptTemplate("Look.", system="Be careful.", fold_system=True)
    messages = prompt.render(Record(id="x", image=ImageRef.from_stage("@S/x")))
    assert [m.role for m in messages] == ["user"]
    assert messages[0].text_content == "Be careful.\n\nLook."
    assert prompt.fingerprint != ChatPromptTemplate("Look.", system="Be careful.").fingerprint
