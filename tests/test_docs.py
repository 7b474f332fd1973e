"""The README and the docs stay true (issue 32): the front page's figures are the ones in the reports they link,
the README stays a short landing page, the commands the pages show exist, and their links resolve.

Figure tables (README.md, docs/models.md) have the columns ``measure | measured on | n | figure (95 % CI) |
report``; every number in a row's n and figure cells must occur, as a number, in the file its report cell
links. To change a figure, change the report and the row together."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FIGURE_PAGES = [README, ROOT / "docs" / "models.md"]
PAGES = [README, ROOT / "CHANGELOG.md", ROOT / "studies" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SETUP_AND_SERVE = "bash scripts/setup.sh && .venv/bin/strokescan serve"
SETUP_AND_TEST = "bash scripts/setup.sh --system && .venv/bin/python -m pytest"
FIGURE_HEADER = ["measure", "measured on", "n", "figure (95 % CI)", "report"]
MODEL_CARDS = sorted((ROOT / "src" / "strokescan" / "resources" / "models").glob("*/MODEL_CARD.md"))

# a number not part of a longer token: "0.855", "2501", "19" in "19 %"; not the "4" of "v0.4.1"
NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w]|\.\d)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def numbers(text: str) -> list[str]:
    return NUMBER.findall(text)


def figure_rows(page: Path) -> list[tuple[int, dict[str, str]]]:
    """(line number, {column: cell}) for every row of every figure table on ``page``."""
    rows, header = [], None
    for i, line in enumerate(page.read_text().splitlines(), 1):
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif header == FIGURE_HEADER and not set(line) <= set("|-: "):
            assert len(cells) == len(header), f"{page.name}:{i}: {len(cells)} cells, expected {len(header)}"
            rows.append((i, dict(zip(header, cells))))
    return rows


ROWS = [(page, i, row) for page in FIGURE_PAGES for i, row in figure_rows(page)]


def _row_id(case) -> str:
    return f"{case[0].name}:{case[1]}"


@pytest.mark.parametrize("case", ROWS, ids=[_row_id(c) for c in ROWS])
def test_each_figure_is_the_one_in_the_report_it_links(case):
    page, line, row = case
    links = LINK.findall(row["report"])
    assert len(links) == 1, f"{page.name}:{line}: the report cell must hold one link"
    target = (page.parent / links[0].split("#")[0]).resolve()
    assert target.is_file(), f"{page.name}:{line}: {links[0]} does not exist"
    in_report = set(numbers(target.read_text()))
    cited = numbers(row["n"]) + numbers(row["figure (95 % CI)"])
    assert numbers(row["figure (95 % CI)"]), f"{page.name}:{line}: no figure"
    missing = [x for x in cited if x not in in_report]
    assert not missing, f"{page.name}:{line} ({row['measure']}): {missing} not in {target.relative_to(ROOT)}"


def test_the_readme_has_one_results_table_of_the_shipped_models_from_reports():
    rows = figure_rows(README)
    text = README.read_text()
    assert len(rows) >= 10 and text.count("| measure | measured on |") == 1
    for _, row in rows:
        assert LINK.findall(row["report"])[0].startswith("reports/"), row
    measures = " ".join(row["measure"] + " " + row["measured on"] for _, row in rows).lower()
    for needed in ("detection", "source left out", "clot dice", "edema dice", "volume", "speed"):
        assert needed in measures, f"the README's table has no row on {needed!r}"
    shipped = {re.search(r"v\d+\.\d+\.\d+", card.read_text().splitlines()[0]).group() for card in MODEL_CARDS}
    named = set(re.findall(r"\bv\d+\.\d+\.\d+\b", text))
    assert named <= shipped, f"the README names versions that are not shipped: {named - shipped}"
    named_candidate = re.search(r"\b(?i:candidate|recipe)s?\s+[A-Z]\w*\b", text)  # "candidate C", "recipe R"
    assert not named_candidate, f"the README names a model candidate: {named_candidate.group()}"


def test_the_readme_is_a_short_landing_page_with_the_two_commands_first():
    lines = README.read_text().splitlines()
    assert len(lines) <= 130, f"README.md has {len(lines)} lines (limit 130)"
    first = "\n".join(lines[:15])
    assert SETUP_AND_SERVE in first and SETUP_AND_TEST in first
    assert "research and triage support, not a diagnosis" in " ".join(lines[:15]).lower()


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _prose(text: str) -> str:
    return FENCE.sub("", text)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_resolve(page):
    broken = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve()
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", _prose(resolved.read_text()), re.M)
            if anchor not in {_slug(h) for h in headings}:
                broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


def test_the_scripts_the_pages_name_exist_and_no_page_names_a_moved_script_by_its_old_path():
    moved = {p.name for p in (ROOT / "studies").glob("*.py")}
    problems = []
    for page in PAGES:
        named = re.findall(r"\b(scripts|studies|benchmarks)/([a-z0-9_][\w.-]*\.(?:py|sh))\b", page.read_text())
        for folder, name in named:
            if not (ROOT / folder / name).is_file():
                problems.append(f"{page.relative_to(ROOT)}: {folder}/{name}")
    records = [*(ROOT / "reports").rglob("*.md"), *(ROOT / "reports").rglob("*.json"), *(ROOT / "tests").glob("*.py"),
               *(ROOT / "benchmarks").glob("*.py"), *(ROOT / "studies").glob("*.py"), *(ROOT / "scripts").glob("*")]
    for path in records:
        if path.is_file() and path != Path(__file__).resolve():
            for name in re.findall(r"\bscripts/([\w.-]+\.py)\b", path.read_text(errors="replace")):
                if name in moved:
                    problems.append(f"{path.relative_to(ROOT)}: scripts/{name} (now studies/{name})")
    assert not problems, problems


def _shown_commands() -> set[tuple[str, ...]]:
    """Every ``strokescan <subcommand ...>`` the pages show in code (fenced shell blocks and inline code),
    as the chain of subcommands the real parser knows; an unknown subcommand is kept so that it fails."""
    from strokescan.app.cli import build_parser

    def choices(parser) -> dict:
        for action in parser._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                return action.choices
        return {}

    root = build_parser()
    code = []
    for page in PAGES:
        text = page.read_text()
        code += [body for lang, body in FENCE.findall(text) if lang not in {"python", "py"}]
        code += re.findall(r"`([^`\n]+)`", FENCE.sub("", text))
    shown = set()
    for snippet in code:
        for match in re.finditer(r"(?:^|(?<=[\s/(]))strokescan((?:[ \t]+[^\s`|;&)#]+)+)", snippet, re.M):
            if re.search(r"\b(from|import)\s+$", snippet[:match.start()]):
                continue
            tokens = [t for t in match.group(1).split() if t not in {"-v", "--verbose"}]
            parser, chain = root, []
            for token in tokens:
                sub = choices(parser)
                if token.startswith("-") or not sub:
                    break
                if token not in sub:
                    if not chain and re.fullmatch(r"[a-z][a-z-]+", token) and token not in {"is", "and", "or", "on",
                                                                                       "in", "the", "with", "to"}:
                        chain.append(token)  # looks like a subcommand that does not exist
                    break
                chain.append(token)
                parser = sub[token]
            if chain:
                shown.add(tuple(chain))
    return shown


def test_every_command_the_pages_show_answers_help():
    shown = sorted(_shown_commands())
    assert ("serve",) in shown and ("predict",) in shown and ("listen",) in shown
    probe = (
        "import json, sys\n"
        "from strokescan.app.cli import main\n"
        "codes = {}\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        codes[' '.join(argv)] = main([*argv, '--help'])\n"
        "    except SystemExit as exc:\n"
        "        codes[' '.join(argv)] = exc.code\n"
        "print(json.dumps(codes))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, json.dumps([list(c) for c in shown])],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    codes = json.loads(done.stdout.strip().splitlines()[-1])
    failed = {command: code for command, code in codes.items() if code not in (0, None)}
    assert not failed, f"strokescan <command> --help failed: {failed}"


def test_the_installed_command_answers_help():
    command = Path(sys.executable).parent / "strokescan"
    if not command.exists():
        pytest.skip("no strokescan console script beside this Python (not installed in this environment)")
    done = subprocess.run([str(command), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "serve" in done.stdout


def test_the_readme_library_example_imports():
    """The names the README's Python example imports exist (running it needs a scan of your own)."""
    imports = [line for lang, body in FENCE.findall(README.read_text()) if lang == "python"
               for line in body.splitlines() if re.match(r"(from \S+ )?import ", line)]
    assert imports
    done = subprocess.run([sys.executable, "-c", "\n".join(imports)], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
