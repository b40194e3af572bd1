"""Regenerate ``data/raw/python_docs.jsonl`` from the Debian ``python3.11-doc`` package.

The corpus is the reStructuredText source of the Python 3.11 documentation, which Sphinx ships
next to the HTML as ``_sources/**/*.rst.txt``. It is English technical prose licensed under the
PSF License Agreement, so it can be redistributed inside this repository.

Usage (as root, no network needed beyond apt)::

    apt-get install -y python3.11-doc
    python3 data/raw/make_python_docs.py

The output is deterministic: records are sorted by ``id`` (the file's path relative to
``_sources``, e.g. ``library/json.rst.txt``) and serialised with fixed JSON options.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

SOURCES = Path("/usr/share/doc/python3.11/html/_sources")
OUTPUT = Path(__file__).resolve().parent / "python_docs.jsonl"

# Release notes are version-by-version change lists (1.7 MB, not prose about one topic) and
# distutils/ + install/ document a package removed in Python 3.12.
EXCLUDED_DIRS = ("whatsnew/", "distutils/", "install/")
# The remaining 461 files make 9.4 MB of JSON; dropping files above 40,000 bytes (the longest
# reference pages such as library/os and library/stdtypes) keeps 395 documents in 4.4 MB
# (396 and 4.5 MB with license.rst.txt, below).
MAX_FILE_BYTES = 40_000
# The PSF License Agreement (clause 2) asks that its text and the copyright notice be retained in
# derivative works, so these two pages are kept whatever their size.
ALWAYS_KEPT = ("copyright.rst.txt", "license.rst.txt")


def package_version(package: str = "python3.11-doc") -> str:
    """Installed Debian version of ``package``, or ``"unknown"`` when dpkg is unavailable."""
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def select_files(sources: Path) -> list[Path]:
    """The ``.rst.txt`` files kept under ``sources``, sorted by relative path."""
    kept = []
    for path in sorted(sources.rglob("*.rst.txt")):
        rel = path.relative_to(sources).as_posix()
        too_big = path.stat().st_size > MAX_FILE_BYTES
        if rel not in ALWAYS_KEPT and (rel.startswith(EXCLUDED_DIRS) or too_big):
            continue
        kept.append(path)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sources", type=Path, default=SOURCES)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    if not args.sources.is_dir():
        raise SystemExit(f"{args.sources} not found: run `apt-get install -y python3.11-doc` first")

    records = []
    for path in select_files(args.sources):
        doc_id = path.relative_to(args.sources).as_posix()
        records.append((doc_id, path.read_text(encoding="utf-8")))
    records.sort()

    tmp = args.output.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for doc_id, text in records:
            f.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
    tmp.replace(args.output)
    size = args.output.stat().st_size
    print(f"wrote {args.output}: {len(records)} documents, {size:,} bytes "
          f"(python3.11-doc {package_version()})")


if __name__ == "__main__":
    main()
