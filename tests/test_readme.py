"""The README's Python snippets run as written."""

from __future__ import annotations

import re

from conftest import REPO_ROOT


def test_readme_python_snippets_run(tmp_path, monkeypatch):
    text = (REPO_ROOT / "README.md").read_text()
    snippets = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert snippets, "README has no python snippet"
    monkeypatch.chdir(tmp_path)
    for snippet in snippets:
        exec(compile(snippet, "README.md", "exec"), {"__name__": "readme"})


def test_readme_starts_with_the_two_commands():
    first_block = re.search(r"```bash\n(.*?)```", (REPO_ROOT / "README.md").read_text(), flags=re.S).group(1)
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == ["make demo", "make test"]
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
