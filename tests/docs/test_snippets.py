"""Every code block a user may copy from the README or the docs is run here.

Rules (also in docs/index.md's contributor note):

- Each markdown file is one test. Its ```` ```python ```` blocks run in order in one
  namespace (like a notebook), in a fresh temporary folder that holds a copy of
  `examples/`.
- A ```` ```bash ```` block runs when every command in it is `medbatch ...` or an offline
  example (`python examples/... --offline` / `--dry-run`); other bash blocks (installation,
  `vllm serve`, a GPU run) are shown, not run.
- A block is skipped only when the line before its fence is `<!-- notest: REASON -->`
  (or its info string says `notest` under such a comment). The reason is required: skips
  are for blocks that need a GPU, an account or a gated model.
- ```` ```toml ```` blocks preceded by `<!-- file: NAME -->` are written to NAME first, so a
  page can show a config and then run it.

The API reference pages have no code blocks of their own (their examples are doctest-style
text in docstrings), and every public module must have one; both are checked here too.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[^`\n]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                   re.M | re.S)  # fmt: skip
NOTEST = re.compile(r"<!--\s*notest(?::\s*(?P<reason>.*?))?\s*-->\s*$", re.S)
FILE_MARK = re.compile(r"<!--\s*file:\s*(?P<name>\S+)\s*-->\s*$")
# A page whose runnable blocks build or run the tiny transformers model needs the `local`
# extra; on an install without it (the other-Python CI legs) the page is skipped, saying so.
_NEEDS_LOCAL = ("tiny-gemma3", "tiny_vlm(", "TransformersRunner(", "medbatch demo")
_HAS_LOCAL = all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers"))
OFFLINE_SCRIPT = re.compile(r"^python examples/\S+\.py\b.*(--offline|--dry-run)")


@dataclass
class Block:
    path: Path
    line: int
    language: str
    info: str
    body: str
    comment: str  # the HTML comment on the line before the fence, if any

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def skip_reason(self) -> str | None:
        """The justification of a skip, '' for an unjustified one, None when not skipped."""
        match = NOTEST.search(self.comment)
        if match is None and "notest" not in self.info.split():
            return None
        return (match.group("reason") or "").strip() if match else ""

    def commands(self) -> list[str]:
        joined = re.sub(r"\\\n\s*", " ", self.body)
        lines = [line.split(" #")[0].strip() for line in joined.splitlines()]
        return [line for line in lines if line and not line.startswith("#")]

    @property
    def runnable_shell(self) -> bool:
        commands = self.commands()
        return bool(commands) and all(
            command.startswith("medbatch ") or OFFLINE_SCRIPT.match(command) for command in commands
        )


def blocks(path: Path) -> list[Block]:
    text = path.read_text("utf-8")
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        info = match.group("info").strip()
        body = re.sub(rf"^{match.group('indent')}", "", match.group("body"), flags=re.M)
        found.append(
            Block(
                path=path,
                line=text.count("\n", 0, match.start()) + 1,
                language=(info.split() or [""])[0],
                info=info,
                body=body,
                comment=before if before.startswith("<!--") else "",
            )
        )
    return found


def page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def run_shell(block: Block, cwd: Path) -> None:
    """`medbatch ...` runs in-process (typer's CliRunner); anything else in bash."""
    from typer.testing import CliRunner

    from medbatch.cli import app

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for command in block.commands():
        words = shlex.split(command)
        if words[0] == "medbatch" and not set(words) & {"|", ">", "&&", ";"}:
            result = CliRunner().invoke(app, words[1:], env={"COLUMNS": "120"})
            output = result.output
            ok = result.exit_code == 0
        else:
            done = subprocess.run(
                ["bash", "-c", command], check=False, cwd=cwd, env=env, capture_output=True,
                text=True, timeout=240,
            )  # fmt: skip
            output = done.stdout + done.stderr
            ok = done.returncode == 0
        assert ok, f"{block.where}: `{command}` failed:\n{output}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_page_snippets_run(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    text = page.read_text("utf-8")
    if any(marker in text for marker in _NEEDS_LOCAL) and not _HAS_LOCAL:
        pytest.skip(f"{page_id(page)} runs the tiny model: needs the `local` extra (torch)")
    if 'tiny_vlm("tiny-vlm")' in text:
        # Pages that build the tiny model get a copy of the shared one (same build, no cost).
        request.getfixturevalue("seed_tiny_vlm")(tmp_path / "tiny-vlm")
    shutil.copytree(ROOT / "examples", tmp_path / "examples",
                    ignore=shutil.ignore_patterns("runs", "__pycache__"))  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict[str, object] = {"__name__": "__snippet__"}
    for block in blocks(page):
        reason = block.skip_reason
        if reason is not None:
            assert reason, f"{block.where}: a notest block must say why: <!-- notest: REASON -->"
            continue
        file_mark = FILE_MARK.search(block.comment)
        if file_mark:
            (tmp_path / file_mark.group("name")).write_text(block.body, "utf-8")
        if block.language in ("python", "py"):
            code = compile(block.body, block.where, "exec")
            exec(code, namespace)
        elif block.language in ("bash", "sh", "console") and block.runnable_shell:
            run_shell(block, tmp_path)


def test_snippet_counts_are_reported(capsys: pytest.CaptureFixture[str]) -> None:
    """Not a check of behaviour: prints how many blocks run and why the others do not."""
    ran = skipped = shown = 0
    for page in PAGES:
        for block in blocks(page):
            if block.skip_reason is not None:
                skipped += 1
            elif block.language in ("python", "py") or block.runnable_shell:
                ran += 1
            elif block.language in ("bash", "sh", "console"):
                shown += 1
    with capsys.disabled():
        print(f"\ndoc snippets: {ran} run, {skipped} skipped (justified), {shown} shell shown")
    assert ran > 0


def _public_modules() -> list[str]:
    names = []
    for path in sorted((ROOT / "src" / "medbatch").rglob("*.py")):
        parts = list(path.relative_to(ROOT / "src").with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        if any(part.startswith("_") for part in parts) or name.split(".")[1:2] in (
            ["cli"],
            ["data"],
        ):
            continue
        tree = ast.parse(path.read_text("utf-8"))
        exported = [
            node.value
            for node in tree.body
            if isinstance(node, (ast.Assign, ast.AnnAssign))
            and any(
                isinstance(target, ast.Name) and target.id == "__all__"
                for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            )
        ]
        if exported and isinstance(exported[0], ast.List) and not exported[0].elts:
            continue  # `__all__ = []`: nothing public
        names.append(name)
    return names


def test_every_public_module_has_a_reference_page() -> None:
    nav = (ROOT / "mkdocs.yml").read_text("utf-8")
    for name in _public_modules():
        page = DOCS / "reference" / f"{name}.md"
        assert page.exists(), f"add docs/reference/{name}.md with '::: {name}'"
        assert f"::: {name}\n" in page.read_text("utf-8")
        assert f"reference/{name}.md" in nav, f"add reference/{name}.md to the mkdocs.yml nav"


def test_blocks_are_closed_and_languages_known() -> None:
    for page in PAGES:
        text = page.read_text("utf-8")
        fences = [line for line in text.splitlines() if line.lstrip().startswith("```")]
        assert len(fences) % 2 == 0, f"{page_id(page)}: an unclosed code fence"
        for block in blocks(page):
            known = {"python", "py", "bash", "sh", "console", "toml", "text", "json", ""}
            assert block.language in known, f"{block.where}: language {block.language!r}"
