"""Code lines of the orchestration area and how the refactor of issue 16 changed them.

Usage::

    .venv/bin/python scripts/code_lines.py [--base 3a96b76] [--rev HEAD] [--commits] [--library]

A code line is a line of a Python file holding a token other than a comment, a docstring
(the first string statement of a module, class or function) or white space. For every
commit from ``--base`` (excluded) to ``--rev`` touching the area, the change of its code
lines is computed file by file (the commit against its parent) and summed per group; the
commits whose subject starts with ``refactor`` or ``style`` or names ``(issue 16)`` are the refactor's own change, the others
the features added since (integrity records, interruptions, the qc stage...). ``--commits``
lists each commit's change. ``--library`` counts every Python file of ``biomarkers/`` and
``pipelines/`` instead, grouped by sub-package: the refactor's change to the whole library.
"""

from __future__ import annotations

import argparse
import collections
import ast
import io
import subprocess
import sys
import tokenize

#: group -> path prefixes (old and new places: pipelines/ moved into biomarkers/pipeline/)
GROUPS = {
    "stage split (runner, stage, stages/)": ("pipelines/runner.py", "biomarkers/pipeline/runner.py",
                                             "biomarkers/pipeline/stage.py", "biomarkers/pipeline/stages/"),
    "rest of pipeline/ (config, cache, demo)": ("pipelines/", "biomarkers/pipeline/"),
    "tracking/": ("biomarkers/tracking",),
    "release/": ("biomarkers/release/",),
    "report, logs, errors": ("biomarkers/report.py", "biomarkers/logs.py", "biomarkers/errors.py"),
    "executors.py": ("biomarkers/executors.py",),
}


LIBRARY = False  # --library: group every library file by its sub-package instead of GROUPS


def group_of(path: str) -> str | None:
    if not path.endswith(".py"):
        return None
    if LIBRARY:
        return "/".join(path.split("/")[:2]) if path.startswith(("biomarkers/", "pipelines/")) else None
    return next((g for g, prefixes in GROUPS.items() if path.startswith(prefixes)), None)


def code_lines(source: str) -> int:
    """Lines holding code: not blank, not only a comment, not part of a docstring."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return sum(1 for ln in source.splitlines() if ln.strip() and not ln.strip().startswith("#"))
    doc: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body \
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            doc.update(range(body[0].lineno, body[0].end_lineno + 1))
    lines: set[int] = set()
    skip = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in skip:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return len(lines - doc)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def lines_at(rev: str, path: str) -> int:
    p = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    return code_lines(p.stdout) if p.returncode == 0 else 0


def totals(rev: str) -> dict[str, int]:
    out = collections.Counter()
    for path in git("ls-tree", "-r", "--name-only", rev).split():
        if (g := group_of(path)) is not None:
            out[g] += lines_at(rev, path)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="3a96b76", help="the commit before the refactor (default %(default)s)")
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--commits", action="store_true", help="list each commit's change")
    ap.add_argument("--library", action="store_true", help="the whole library, by sub-package")
    a = ap.parse_args(argv)
    global LIBRARY
    LIBRARY = a.library
    refactor, features = collections.Counter(), collections.Counter()
    for line in git("log", "--reverse", "--format=%H %s", f"{a.base}..{a.rev}").splitlines():
        sha, subject = line.split(" ", 1)
        changed = git("diff-tree", "--no-commit-id", "--name-only", "-r", "--no-renames", f"{sha}^", sha).split()
        delta = collections.Counter()
        for path in changed:
            if (g := group_of(path)) is not None:
                delta[g] += lines_at(sha, path) - lines_at(f"{sha}^", path)
        if not any(delta.values()):
            continue
        into = refactor if subject.startswith(("refactor", "style")) or "(issue 16)" in subject else features
        for g, d in delta.items():
            into[g] += d
        if a.commits:
            print(f"{sha[:7]} {sum(delta.values()):+5d}  {subject[:90]}")
    base, rev = totals(a.base), totals(a.rev)
    groups = sorted(set(base) | set(rev) | set(refactor)) if LIBRARY else list(GROUPS)
    print(f"\ncode lines of the {'library' if LIBRARY else 'orchestration area'}, {a.base} -> {a.rev}")
    print(f"{'group':<42}{'base':>7}{'rev':>7}{'total':>8}{'refactor':>10}{'features':>10}")
    for g in groups:
        print(f"{g:<42}{base[g]:>7}{rev[g]:>7}{rev[g] - base[g]:>+8}{refactor[g]:>+10}{features[g]:>+10}")
    print(f"{'all':<42}{sum(base.values()):>7}{sum(rev.values()):>7}{sum(rev.values()) - sum(base.values()):>+8}"
          f"{sum(refactor.values()):>+10}{sum(features.values()):>+10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
