"""Tasks by configuration: a TOML file loads as a `Task`, and every mistake names its key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from medbatch import ConfigError, ImageRef, Record
from medbatch.parsing.answer import FinalAnswerParser
from medbatch.parsing.json import JSONLabelParser
from medbatch.tasks.config import load_task_file, task_from_mapping

EXAMPLE = Path(__file__).parents[3] / "examples" / "skin_lesion_task.toml"

MINIMAL = """
[task]
name = "cxr"

[labels]
NORMAL = "Clear lungs"
PNEUMONIA = "Opacity"

[prompts.v1]
user = "Answer one of {label_names}."
"""


def write(tmp_path: Path, text: str, name: str = "task.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_the_example_task_file_loads() -> None:
    task = load_task_file(EXAMPLE)
    assert task.name == "skin-lesion"
    assert task.labels.names == ("MELANOMA", "NEVUS", "KERATOSIS")
    assert task.labels.normalize("seborrheic keratosis") == "KERATOSIS"
    assert task.prompt_version == "cot-v1"
    assert task.constrained_prompt_version == "direct-v1"
    assert dict(task.folder_map) == {"mel": "MELANOMA", "nv": "NEVUS", "bkl": "KERATOSIS"}
    assert task.params.max_tokens == 512
    assert isinstance(task.parser, FinalAnswerParser)
    assert task.parser.parse("FINAL CLASSIFICATION: mole").label == "NEVUS"


def test_placeholders_are_filled_and_the_image_is_attached() -> None:
    task = load_task_file(EXAMPLE)
    record = Record(id="a", image=ImageRef.from_bytes(b"x"))
    system, user = task.prompt.render(record)
    assert system.role == "system"
    assert "- **MELANOMA**: Asymmetry" in user.text_content
    assert "{labels}" not in user.text_content
    assert user.images == (record.image,)
    direct = task.for_constrained_decoding().prompt.render(record)
    assert "MELANOMA, NEVUS, KERATOSIS" in direct[-1].text_content
    assert task.prompt.fingerprint != task.for_constrained_decoding().prompt.fingerprint


def test_minimal_file_defaults(tmp_path: Path) -> None:
    task = load_task_file(write(tmp_path, MINIMAL))
    assert task.prompt_version == "v1"
    assert task.constrained_prompt_version is None
    assert task.labels.get("NORMAL").description == "Clear lungs"
    assert dict(task.folder_map) == {}


def test_prompt_text_from_a_file_and_image_first(tmp_path: Path) -> None:
    (tmp_path / "prompt.md").write_text("Options:\n{labels}\n", encoding="utf-8")
    text = MINIMAL.replace(
        'user = "Answer one of {label_names}."',
        'user_file = "prompt.md"\nimage_position = "before"\nfold_system = true\n'
        'system = "Be brief."',
    )
    task = load_task_file(write(tmp_path, text))
    (message,) = task.prompt.render(Record(id="a", image=ImageRef.from_bytes(b"x")))
    assert message.content[0].type == "image"
    assert message.text_content.startswith("Be brief.\n\nOptions:\n- **NORMAL**")


def test_parser_kinds(tmp_path: Path) -> None:
    task = load_task_file(write(tmp_path, MINIMAL + '\n[parser]\nkind = "json"\n'))
    assert isinstance(task.parser, JSONLabelParser)
    dotted = MINIMAL + '\n[parser]\nkind = "medbatch.parsing.answer:FinalAnswerParser"\n'
    dotted += "allow_sole_mention = false\n"
    assert isinstance(load_task_file(write(tmp_path, dotted)).parser, FinalAnswerParser)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (("[task]", "[task]\ncolour = 1"), "task.colour"),
        (('name = "cxr"', ""), "task.name"),
        (("[labels]", "[labels]\nbad-name = 'x'"), "labels"),
        (('user = "Answer one of {label_names}."', 'system = "hi"'), "prompts.v1.user"),
        (("[prompts.v1]", "[prompts.v1]\ntemperature = 0"), "prompts.v1.temperature"),
        (("[task]", '[task]\nprompt_version = "v2"'), "task.prompt_version"),
        (("[task]", '[task]\nconstrained_prompt = "v9"'), "task.constrained_prompt"),
        (("[task]", '[folder_map]\nnormal = "NORMAL"\nill = "SICK"\n[task]'), "folder_map.ill"),
        (("[task]", "[params]\ntemperature = 9\n[task]"), "params.temperature"),
        (("[task]", '[parser]\nkind = "regex"\n[task]'), "parser.kind"),
        (("[task]", '[parser]\nkind = "final-answer"\nstrict = true\n[task]'), "parser"),
        (("[task]", "[extra]\n[task]"), "extra"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, change: tuple[str, str], key: str) -> None:
    path = write(tmp_path, MINIMAL.replace(*change, 1))
    with pytest.raises(ConfigError) as excinfo:
        load_task_file(path)
    assert f"{path}: {key}:" in str(excinfo.value)


def test_missing_tables_and_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_task_file(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_task_file(write(tmp_path, "[task\n"))
    with pytest.raises(ConfigError, match=r"labels: missing table \[labels\]"):
        task_from_mapping({"task": {"name": "x"}, "prompts": {"v": {"user": "u"}}})
    with pytest.raises(ConfigError, match=r"prompts\.v1\.user_file: cannot read"):
        load_task_file(
            write(tmp_path, MINIMAL.replace('user = "Answer one of {label_names}."',
                                            'user_file = "missing.md"'))
        )  # fmt: skip


def test_a_synonym_claimed_by_two_labels_is_refused(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        '[labels]\nNORMAL = "Clear lungs"\nPNEUMONIA = "Opacity"',
        '[labels.NORMAL]\nsynonyms = ["clear"]\n[labels.PNEUMONIA]\nsynonyms = ["Clear"]',
    )
    with pytest.raises(ConfigError, match=r"labels: .*already names label NORMAL"):
        load_task_file(write(tmp_path, text))


def test_a_task_file_declares_its_negative_label(tmp_path: Path) -> None:
    with_negative = MINIMAL.replace('name = "cxr"', 'name = "cxr"\nnegative = "NORMAL"')
    assert with_negative != MINIMAL
    assert load_task_file(write(tmp_path, with_negative)).labels.negative == "NORMAL"
    assert load_task_file(write(tmp_path, MINIMAL, "plain.toml")).labels.negative is None
    unknown = MINIMAL.replace('name = "cxr"', 'name = "cxr"\nnegative = "HEALTHY"')
    with pytest.raises(ConfigError, match="negative label 'HEALTHY'"):
        load_task_file(write(tmp_path, unknown, "bad.toml"))
