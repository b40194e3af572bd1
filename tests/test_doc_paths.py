"""Every repository path cited in the docs, docstrings and comments exists: a file moved without its citations
updated sends the next reader to nothing.

A citation is a path under one of our folders ending in a file name with an extension we keep (`llm/train/loop.py`,
`docs/architecture.md`, `launch/slurm/pretrain.sbatch`) or in `/` (a folder). Paths under configs/ and data/ are left
out: the docs name configs the user writes (`configs/pretrain/my_run.yaml`) and folders a run makes.
"""
from __future__ import annotations

import re
from pathlib import Path
import pytest

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("llm", "parallel", "data_pipeline", "launch", "typed_yaml", "tests", "bench", "docs")
CITATION = re.compile(r"(?<![\w/.-])((?:%s)/(?:[\w.-]+/)*(?:[\w-]+\.(?:py|md|sh|sbatch|json|yaml)\b|(?=[\s`)'\"])))"
                      % "|".join(FOLDERS))
SOURCES = ("*.py", "*.md", "*.sh", "*.sbatch", "*.yaml")


def cited_paths() -> dict[str, list[str]]:
    """{cited path: the files citing it}."""
    found: dict[str, list[str]] = {}
    for pattern in SOURCES:
        for path in ROOT.rglob(pattern):
            rel = path.relative_to(ROOT)
            if rel.parts[0] in (".git", "runs") or "egg-info" in rel.parts[0]:
                continue
            for match in CITATION.finditer(path.read_text(errors="replace")):
                found.setdefault(match.group(1), []).append(str(rel))
    return found


def test_the_citation_pattern_finds_what_it_must():
    text = "see llm/train/loop.py, `docs/architecture.md` and launch/slurm/ (not configs/x.yaml nor foo/llm/x.py)"
    assert [m.group(1) for m in CITATION.finditer(text)] == ["llm/train/loop.py", "docs/architecture.md",
                                                             "launch/slurm/"]


def test_every_cited_path_exists():
    cited = cited_paths()
    assert len(cited) > 100  # the pattern still finds the tree's citations
    missing = {p: sorted(set(where))[:3] for p, where in cited.items() if not (ROOT / p).exists()}
    assert missing == {}
