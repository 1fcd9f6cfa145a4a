"""The docs run as written: every ```python block of README.md and docs/*.md, each file's
blocks in order in one namespace, in a fresh working directory. A block that cannot run
here (a user's file, a GPU, a download) says so on the line before its fence,
``<!-- not run: why -->``; shell blocks are not run. Where the blocks read a zoo or a run
directory that the page's shell commands would make (``zoos/siren-digits``, ``runs/7``), a
tiny one is made there first."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
NOT_RUN = re.compile(r"^<!--\s*not run:\s*\S.*-->$")
MAX_NOT_RUN = 3  # across all pages: marking a block is the exception, not the way out


def python_blocks(page: Path) -> list[tuple[int, bool, str]]:
    """(line of the fence, whether it runs, code) of each python block of ``page``."""
    text = page.read_text()
    out = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip().rsplit("\n", 1)[-1].strip()
        out.append((text.count("\n", 0, m.start()) + 1, not NOT_RUN.match(before), m.group(1)))
    return out


def _siren_zoo() -> None:
    from graphnfn.zoo.__main__ import main

    main(["siren", "--dataset", "digits", "--out", "zoos/siren-digits", "--limit", "60", "--steps", "20",
          "--device", "cpu", "--threads", "1", "--no-progress"])


def _trained_run() -> None:
    """A run directory like the one the README's compare command leaves, as runs/7."""
    from sacred.observers import FileStorageObserver

    from experiments.inr_classification import ex

    saved = list(ex.observers)
    ex.observers[:] = [FileStorageObserver("runs")]
    try:
        run = ex.run(config_updates={"zoo": "zoos/siren-digits", "model": "pna", "steps": 2, "eval_every": 1,
                                     "batch_size": 16, "d_hidden": 8, "n_layers": 1, "fourier": 4, "device": "cpu"})
    finally:
        ex.observers[:] = saved
    shutil.move(f"runs/{run._id}", "runs/7")


#: what a page's python reads -> how to make a tiny one (in this order)
FIXTURES = {"zoos/siren-digits": _siren_zoo, "runs/7": _trained_run}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(page, tmp_path, monkeypatch):
    blocks = python_blocks(page)
    if not blocks:
        pytest.skip("no python blocks")
    monkeypatch.chdir(tmp_path)
    code = "".join(c for _, runs, c in blocks if runs)
    for name, make in FIXTURES.items():
        if name in code:
            make()
    namespace = {"__name__": "__docs__"}
    for line, runs, block in blocks:
        if runs:
            try:
                exec(compile(block, f"{page.name}:{line}", "exec"), namespace)
            except Exception as err:
                raise AssertionError(f"{page.relative_to(ROOT)}, python block at line {line}: "
                                     f"{type(err).__name__}: {err}") from err


def test_few_blocks_are_marked_not_run():
    marked = [f"{p.relative_to(ROOT)}:{line}" for p in PAGES for line, runs, _ in python_blocks(p) if not runs]
    assert len(marked) <= MAX_NOT_RUN, marked


def test_a_broken_block_fails_and_a_mark_is_seen(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- not run: needs a downloaded zoo -->\n```python\nopen('zoo')\n```\n\n"
                    "```python\nx = undefined_name\n```\n```bash\nnot python\n```\n")
    assert [(line, runs) for line, runs, _ in python_blocks(page)] == [(2, False), (6, True)]
    with pytest.raises(NameError):
        exec(python_blocks(page)[1][2], {})


def test_readme_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300
