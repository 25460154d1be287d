"""Every command, given bad input, fails with one line on stderr and no traceback.

Also: user strings (file names, record ids) that look like rich markup or hold terminal
escapes are shown as text, never interpreted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from medbatch.cli import app

runner = CliRunner()

LABEL_FOLDERS = {
    "NORMAL": "normal",
    "ABNORMAL_HEARTBEAT": "abnormal",
    "MYOCARDIAL_INFARCTION": "mi",
    "POST_MI": "pmi",
}


def _dataset(root: Path, names: dict[str, str]) -> None:
    """One small PNG per file name, in the ECG task's class folders (folder -> label)."""
    for folder, name in names.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 24), (200, 10, 10)).save(root / folder / name, format="PNG")


def _config(tmp_path: Path, *, top: str = "", runner_table: str = "", dataset: str = "") -> Path:
    images = tmp_path / "images"
    if not images.exists():
        _dataset(
            images,
            {"normal_ecg_images": "a.png", "abnormal_heartbeat_ecg_images": "b.png"},
        )
        answers = [
            {"record_id": "normal_ecg_images/a.png", "text": "NORMAL"},
            {"record_id": "abnormal_heartbeat_ecg_images/b.png", "text": "ABNORMAL_HEARTBEAT"},
        ]
        (tmp_path / "answers.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers))
    config = tmp_path / "run.toml"
    config.write_text(
        (top or 'output_dir = "out"')
        + '\n[task]\nname = "ecg"\n'
        + "[dataset]\n"
        + (dataset or 'kind = "folder"\nroot = "images"')
        + "\n[runner]\n"
        + (runner_table or 'kind = "replay"\npath = "answers.jsonl"')
        + "\n"
    )
    return config


def _finished_run(tmp_path: Path) -> Path:
    config = _config(tmp_path)
    result = runner.invoke(app, ["run", str(config), "--no-progress"])
    assert result.exit_code == 0, result.output
    return tmp_path / "out"


# Each case: (name, argv builder, text the one error line must contain).
Case = tuple[str, Callable[[Path], list[str]], str]
CASES: list[Case] = [
    ("flag given a value", lambda p: ["--debug", "true", "tasks"], "No such command 'true'"),
    ("tasks: unknown option", lambda p: ["tasks", "--bogus"], "No such option: --bogus"),
    ("run: missing config", lambda p: ["run", str(p / "nope.toml")], "does not exist"),
    ("run: --limit -1", lambda p: ["run", str(_config(p)), "--limit", "-1"], "--limit"),
    ("run: --limit 0", lambda p: ["run", str(_config(p)), "--limit", "0"], "--limit"),
    (
        "run: output_dir = 5",
        lambda p: ["run", str(_config(p, top="output_dir = 5"))],
        "output_dir",
    ),
    (
        "run: port 99999",
        lambda p: [
            "run",
            str(
                _config(
                    p,
                    runner_table='kind = "openai"\nbase_url = "http://127.0.0.1:99999/v1"\n'
                    'model = "m"',
                )
            ),
        ],
        "Port out of range",
    ),
    (
        "validate: typo at the top level",
        lambda p: ["validate", str(_config(p, top='output_dir = "out"\nlimt = 3'))],
        "unknown key 'limt' (did you mean 'limit'?)",
    ),
    (
        "validate: typo in [dataset]",
        lambda p: ["validate", str(_config(p, dataset='kind = "folder"\nrooot = "images"'))],
        "unknown key 'rooot' (did you mean 'root'?)",
    ),
    (
        "validate: unknown runner",
        lambda p: ["validate", str(_config(p, runner_table='kind = "replya"'))],
        "Did you mean: replay?",
    ),
    (
        "synth-ecg: folder not empty",
        lambda p: ["synth-ecg", str(_config(p).parent)],
        "pass --overwrite",
    ),
    ("synth-ecg: -n 0", lambda p: ["synth-ecg", str(p / "ecg"), "-n", "0"], "'-n'"),
    ("synth-ecg: -n 3", lambda p: ["synth-ecg", str(p / "ecg"), "-n", "3"], "'-n'"),
    (
        "evaluate: unknown negative label",
        lambda p: ["evaluate", str(_finished_run(p)), "--negative-label", "NORMALL"],
        "NORMALL",
    ),
    ("evaluate: no run", lambda p: ["evaluate", str(p / "nowhere")], "does not exist"),
    ("report: not a folder", lambda p: ["report", str(_config(p))], "not a run directory"),
    (
        "compare: one run missing",
        lambda p: ["compare", str(_finished_run(p)), str(p / "nowhere")],
        "does not exist",
    ),
    ("demo: --per-class 0", lambda p: ["demo", "--per-class", "0"], "--per-class"),
]


@pytest.mark.parametrize(("argv", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_on_stderr(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    argv: Callable[[Path], list[str]],
    expected: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    args = argv(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code not in (0, None), result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert expected in lines[0]
    assert "overwrite=True" not in lines[0]


def test_validate_reports_an_unknown_runner_before_reading_images(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["validate", str(_config(tmp_path, runner_table='kind = "replya"'))]
    )
    assert result.exit_code == 2
    assert "Pre-flight validation" not in result.output


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    config = _config(tmp_path, top="output_dir = 5")
    plain = runner.invoke(app, ["run", str(config)])
    assert plain.exit_code == 2
    debug = runner.invoke(app, ["--debug", "run", str(config)])
    # --debug prints the whole chained traceback (credentials redacted), then exits the same.
    assert debug.exit_code == 2
    assert "Traceback (most recent call last)" in debug.stderr
    assert "Traceback" not in plain.stderr


def test_flags_show_no_value_placeholder() -> None:
    result = runner.invoke(app, ["--help"])
    debug_line = next(line for line in result.output.splitlines() if "--debug" in line)
    assert "<bool>" not in debug_line


def test_markup_and_escapes_in_file_names_are_shown_as_text(tmp_path: Path) -> None:
    names = ["scan [copy] 2.png", "[red]x.png", "\x1b[2Jwipe.png"]
    root = tmp_path / "images" / "normal_ecg_images"
    root.mkdir(parents=True)
    for name in names:
        # Not an image: validate lists each file by name as an error row.
        (root / name).write_bytes(b"not an image")
    answers = "".join(
        json.dumps({"record_id": f"normal_ecg_images/{n}", "text": "NORMAL"}) + "\n" for n in names
    )
    (tmp_path / "answers.jsonl").write_text(answers)
    # A closing tag with no opening one made rich raise MarkupError after the run's results
    # were written.
    config = _config(tmp_path, top='output_dir = "out [/x]"')
    validate = runner.invoke(app, ["validate", str(config)])
    assert validate.exit_code == 1, validate.output  # the files are not images
    text = " ".join(validate.output.split())
    assert "Traceback" not in validate.output
    assert "scan [copy] 2.png" in text
    assert "[red]x.png" in text
    assert "\x1b" not in validate.output
    assert "\\x1b[2Jwipe.png" in text
    run = runner.invoke(app, ["run", str(config), "--no-progress"])
    assert "Traceback" not in run.output
    assert "\x1b" not in run.output
    # The replay runner never decodes the images: every record is answered.
    assert run.exit_code == 0, run.output
    assert "out [/x]" in run.output
    assert (tmp_path / "out [/x]" / "manifest.json").is_file()


def test_log_lines_carry_no_escape_sequences() -> None:
    import logging

    from medbatch.terminal import PrintableFormatter

    record = logging.LogRecord(
        "medbatch.x", logging.WARNING, __file__, 1, "bad image %s", ("\x1b[2Jwipe.png",), None
    )
    line = PrintableFormatter("%(levelname)s %(message)s").format(record)
    assert line == "WARNING bad image \\x1b[2Jwipe.png"
