"""The project's own rules: the docs site builds without a warning, its generated pages cover the code they are
written from, and no function in src/ outgrows a screen."""

from __future__ import annotations

import ast
import subprocess
import sys

from cifarbench.config import RunConfig, flatten
from conftest import REPO

sys.path.insert(0, str(REPO / "docs"))
import hooks  # noqa: E402  (docs/hooks.py: the MkDocs hook)


def test_the_docs_site_builds_strictly(tmp_path):
    """`mkdocs build --strict`: a broken link, a page missing from the nav or a bad hook fails the build."""
    done = subprocess.run([str(REPO / ".venv/bin/mkdocs"), "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    page = (tmp_path / "site/configuration/index.html").read_text()
    assert "<code>measure.cost_per_gpu_hour</code>" in page and "<code>trainer.ddp.bucket_cap_mb</code>" in page


def test_the_configuration_reference_has_every_field_with_what_it_does():
    rows = {line.split("`")[1]: line for line in hooks.configuration_reference().splitlines() if line.startswith("| `")}
    assert set(rows) == set(flatten(RunConfig().to_dict()))  # a field added to config.py is on the page
    assert not [field for field, row in rows.items() if row.endswith("|  |")]  # and says what it does


def test_the_refusals_page_lists_each_refusal_with_what_is_allowed():
    text = hooks.refusals()
    assert "- `trainer.precision=<t.precision>`: fp16 autocast needs a CUDA GPU; on CPU use bf16-mixed or 32-true" in text
    assert "### `cifarbench/report/compare.py`" in text and "&lt;" in text  # interpolated values shown, escaped


MAX_FUNCTION_LINES = 60


def test_no_function_in_src_is_longer_than_a_screen():
    long = [f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in sorted((REPO / "src").rglob("*.py"))
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, long
