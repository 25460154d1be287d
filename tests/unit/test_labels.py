from __future__ import annotations

import pytest
from pydantic import ValidationError

from medbatch.labels import Label, LabelSet, fold_label_text


def test_normalize_folds_case_and_separators() -> None:
    labels = LabelSet(labels=(Label(name="POST_MI", synonyms=("old MI",)), Label(name="NORMAL")))
    for text in ("POST_MI", "post-MI", "Post MI", "**post_mi**", " `POST MI`. "):
        assert labels.normalize(text) == "POST_MI", text
    assert labels.normalize("old mi") == "POST_MI"
    assert labels.normalize("ABNORMAL") is None
    assert labels.normalize("the answer is NORMAL") is None  # whole strings only


def test_synonym_clash_is_rejected() -> None:
    with pytest.raises(ValidationError, match="already names"):
        LabelSet(labels=(Label(name="A", synonyms=("x",)), Label(name="B", synonyms=("X",))))


def test_bad_label_names_are_rejected() -> None:
    with pytest.raises(ValidationError, match="must start with a letter"):
        Label(name="1 bad name")


def test_options_text_lists_each_label_with_description() -> None:
    labels = LabelSet.from_mapping(
        {"NORMAL": "no findings", "PNEUMONIA": {"description": "opacity"}}
    )
    assert labels.options_text() == "- **NORMAL**: no findings\n- **PNEUMONIA**: opacity"
    assert labels.names == ("NORMAL", "PNEUMONIA")
    assert "NORMAL" in labels
    assert "normal" not in labels


def test_phrases_are_longest_first() -> None:
    labels = LabelSet(labels=(Label(name="MI", synonyms=("acute MI",)), Label(name="POST_MI")))
    lengths = [len(phrase) for phrase, _ in labels.phrases()]
    assert lengths == sorted(lengths, reverse=True)


def test_fold_label_text() -> None:
    assert fold_label_text("  Post--MI_x ") == "post mi x"


def test_negative_label_must_be_one_of_the_names() -> None:
    labels = LabelSet.from_names(["NORMAL", "PNEUMONIA"], negative="NORMAL")
    assert labels.negative == "NORMAL"
    assert LabelSet.from_names(["NORMAL", "PNEUMONIA"]).negative is None
    with pytest.raises(ValidationError, match="negative label 'HEALTHY'"):
        LabelSet.from_names(["NORMAL", "PNEUMONIA"], negative="HEALTHY")
    # A synonym is not a name: the reference label is a canonical name.
    with pytest.raises(ValidationError, match="negative label 'clear'"):
        LabelSet(labels=(Label(name="NORMAL", synonyms=("clear",)),), negative="clear")


def test_the_ecg_task_declares_normal_as_its_negative() -> None:
    from medbatch.tasks.registry import get_task

    assert get_task("ecg").labels.negative == "NORMAL"
