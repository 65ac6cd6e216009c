"""The docs stand alone and tell the truth: no pointer leaves the repository, every relative link
and cited anchor exists, every `spherelab.x` name in the docs imports, the README's layout is the
tree, and docs/run_files.md lists exactly the keys the code writes."""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "spherelab"
SCANNED = (
    "src",
    "docs",
    "benchmarks",
    "tests",
    "README.md",
    "BENCHMARKS.md",
    "Makefile",
    "pyproject.toml",
)
# Files outside the repository that the docs must never point to: the paper notes and design
# notes that live beside the checkout, the paper's own code, absolute paths of a machine.
FORBIDDEN = {
    "PAPER.md": re.compile(r"PAPER\.md"),
    "DESIGN.md": re.compile(r"DESIGN\.md"),
    "../shared": re.compile(r"\.\./shared\b"),
    "shared/": re.compile(r"(?<![\w.-])shared/"),
    "official/": re.compile(r"(?<![\w.-])official/"),
    "an absolute machine path": re.compile(r"(?<![\w.])/(?:work|home|Users|root|mnt)/\w"),
}
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CITATION = re.compile(r"\bdocs/([\w-]+\.md)(?:#([\w-]+))?")
DOTTED = re.compile(r"\bspherelab(?:\.[A-Za-z_]\w*)+")
FENCE = re.compile(r"^(```|~~~)")


def _doc_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _scanned_files() -> list[Path]:
    """Tracked (or new, not ignored) files under SCANNED, but this one, which names what it
    forbids; every file there when git is not available."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *SCANNED],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
        files = [ROOT / name for name in out.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        files = [
            p
            for s in SCANNED
            for p in ([ROOT / s] if (ROOT / s).is_file() else (ROOT / s).rglob("*"))
        ]
    skip = ("__pycache__", ".egg-info", ".pytest_cache")
    return [
        p
        for p in dict.fromkeys(files)
        if p.is_file() and p != Path(__file__).resolve() and not any(s in str(p) for s in skip)
    ]


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:  # a binary file (a figure)
        return None


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for _, line in _prose_lines(page.read_text(encoding="utf-8")):
        match = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = _slug(match.group(2))
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def test_no_file_points_outside_the_repository():
    hits = []
    for path in _scanned_files():
        text = _text(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            for what, pattern in FORBIDDEN.items():
                if pattern.search(line):
                    hits.append(f"{path.relative_to(ROOT)}:{number}: {what}: {line.strip()}")
    assert not hits, "these lines point outside the repository:\n" + "\n".join(hits)


def test_every_relative_link_in_the_docs_points_to_a_file_and_anchor_that_exist():
    broken = []
    for page in _doc_pages():
        for number, line in _prose_lines(page.read_text(encoding="utf-8")):
            for target in LINK.findall(line):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                    continue
                where = f"{page.relative_to(ROOT)}:{number}: {target}"
                file_part, _, anchor = target.partition("#")
                dest = (page.parent / file_part).resolve() if file_part else page
                if ROOT not in dest.parents and dest != ROOT:
                    broken.append(f"{where} (leaves the repository)")
                elif not dest.exists():
                    broken.append(f"{where} (no such file)")
                elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                    broken.append(f"{where} (no such heading in {dest.name})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_docs_citation_in_code_and_docs_names_a_page_and_anchor_that_exist():
    files = [p for p in _scanned_files() if p.suffix in (".py", ".md")]
    files += sorted((ROOT / "tests").glob("*.py"))
    broken = []
    for path in files:
        text = _text(path) or ""
        for number, line in enumerate(text.splitlines(), start=1):
            for name, anchor in CITATION.findall(line):
                page = ROOT / "docs" / name
                where = f"{path.relative_to(ROOT)}:{number}: docs/{name}#{anchor}"
                if not page.is_file():
                    broken.append(f"{where} (no such page)")
                elif anchor and anchor not in _anchors(page):
                    broken.append(f"{where} (no such heading)")
    assert not broken, "citations of missing docs or sections:\n" + "\n".join(broken)


def test_markdown_tables_have_the_same_number_of_cells_in_every_row():
    """An unescaped | inside a cell (a norm ||w||) silently splits the cell."""
    bad = []
    for page in _doc_pages():
        width = None
        for number, line in _prose_lines(page.read_text(encoding="utf-8")):
            if not line.startswith("|"):
                width = None
                continue
            cells = len(re.findall(r"(?<!\\)\|", line))
            width = cells if width is None else width
            if cells != width:
                bad.append(f"{page.relative_to(ROOT)}:{number}: {cells - 1} cells, not {width - 1}")
    assert not bad, "table rows with a stray |:\n" + "\n".join(bad)


def _resolve(dotted: str) -> object:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_every_spherelab_name_the_docs_mention_exists():
    missing = []
    for page in _doc_pages():
        for name in sorted(set(DOTTED.findall(page.read_text(encoding="utf-8")))):
            try:
                _resolve(name)
            except (ImportError, AttributeError):
                missing.append(f"{page.relative_to(ROOT)}: {name}")
    assert not missing, "the docs name modules or objects that do not exist:\n" + "\n".join(missing)


def test_the_imports_of_every_python_example_in_the_docs_work():
    for page in _doc_pages():
        text = page.read_text(encoding="utf-8")
        # modules the page itself writes (a factory "in `my_nets.py`") are the reader's own
        own = set(re.findall(r"`(\w+)\.py`", text))
        for block in re.findall(r"```python\n(.*?)```", text, re.S):
            tree = ast.parse(block, filename=str(page))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module in own:
                    continue
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    exec(compile(ast.Module([node], []), str(page), "exec"), {})


def _layout_block() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Layout\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, "README lost its Layout section"
    block = re.search(r"```\n(.*?)```", section.group(1), re.S)
    assert block, "README's Layout section lost its file list"
    return block.group(1).splitlines()


def test_readme_layout_lists_exactly_the_modules_and_subpackages_of_the_package():
    lines = _layout_block()
    assert lines[0].strip() == "src/spherelab/"
    listed = [line.split()[0] for line in lines[1:] if line.startswith("  ") and line.strip()]
    tree = {p.name for p in PACKAGE.glob("*.py")} | {
        p.name + "/" for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()
    }
    assert len(listed) == len(set(listed)), f"listed twice: {listed}"
    assert sorted(tree - set(listed)) == [], "in src/spherelab but not in the README layout"
    assert sorted(set(listed) - tree) == [], "in the README layout but not in src/spherelab"
    for line in lines[1:]:
        if line.startswith("  ") and line.strip():
            assert len(line.split(maxsplit=1)) == 2, f"layout line without its job: {line!r}"


def test_readme_layout_top_level_entries_exist():
    top = [line.split()[0] for line in _layout_block() if line.strip() and not line.startswith(" ")]
    assert [t for t in top if not (ROOT / t).exists()] == []


# --- docs/run_files.md lists the keys the code writes ------------------------------------------


def _section(heading: str) -> str:
    text = (ROOT / "docs" / "run_files.md").read_text(encoding="utf-8")
    level = heading.split()[0]
    match = re.search(
        rf"^{re.escape(heading)}\n(.*?)(?=^#{{1,{len(level)}}} |\Z)", text, re.S | re.M
    )
    assert match, f"docs/run_files.md lost its section {heading!r}"
    return match.group(1)


def _documented(heading: str, table: int = 0) -> list[str]:
    """The backticked keys in the first column of the `table`-th table of a section, in order."""
    tables = re.findall(r"((?:^\|.*\n)+)", _section(heading), re.M)
    rows = tables[table].splitlines()[2:]  # skip the header and the --- line
    return [key for row in rows for key in re.findall(r"`([^`]+)`", row.split("|")[1])]


def _tiny_config(**over):
    from spherelab import Config, apply_overrides

    base = {
        "model.name": "mlp_si",
        "model.width": 16,
        "model.depth": 2,
        "data.name": "synthetic:40:256",
        "data.batch_size": 32,
        "train.epochs": 3,
        "train.records": 3,
        "train.device": "cpu",
    }
    return apply_overrides(Config(), base | over)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny finished run, diagnosed as `spherelab diagnose RUN` would (with fewer probes)."""
    from spherelab import train_run
    from spherelab.diagnose import DiagnoseOptions, diagnose_run

    out = tmp_path_factory.mktemp("docs") / "run"
    train_run(_tiny_config(), out)
    what = ("grad", "angles", "curvature", "fisher")
    diagnose_run(out, DiagnoseOptions(what, samples=128, probes=2, top_k=2, iters=4))
    return out


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_run_files_lists_exactly_the_metrics_keys(run_dir):
    documented = _documented("### metrics.jsonl")
    for row in _rows(run_dir / "metrics.jsonl"):
        assert sorted(row) == sorted(documented)


def test_run_files_lists_exactly_the_metrics_keys_of_a_noisy_run(tmp_path):
    from spherelab import train_run

    cfg = _tiny_config(**{"data.label_noise": 0.2, "train.epochs": 1, "train.records": 1})
    train_run(cfg, tmp_path / "noisy")
    documented = _documented("### metrics.jsonl") + _documented("### metrics.jsonl", table=1)
    for row in _rows(tmp_path / "noisy" / "metrics.jsonl"):
        assert sorted(row) == sorted(documented)


def test_run_files_lists_exactly_the_summary_keys(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    extra = _documented("### summary.json")
    assert sorted(summary) == sorted({*_documented("### metrics.jsonl"), *extra})
    assert summary["status"] in ("finished", "nonfinite")


def test_run_files_lists_exactly_the_config_tables(run_dir):
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    assert sorted(config) == sorted(_documented("### config.json"))


def test_run_files_lists_exactly_the_checkpoint_contents(run_dir):
    import torch

    steps = sorted((run_dir / "checkpoints").glob("step_*.pt"))
    assert steps and all(re.fullmatch(r"step_\d{9}\.pt", p.name) for p in steps)
    state = torch.load(steps[-1], weights_only=True)
    assert sorted(state) == sorted(_documented("### checkpoints/"))
    assert sorted(torch.load(run_dir / "checkpoints" / "init.pt", weights_only=True)) == ["init"]


def test_run_files_documents_every_diagnostics_key(run_dir):
    documented = set(_documented("### diagnostics.jsonl"))
    for row in _rows(run_dir / "diagnostics.jsonl"):
        assert set(row) - documented == set()


def _fake_runner(config, run_dir):
    """A stand-in for training: convergence below ELR 1e-2, divergence above."""
    regime = "convergence" if config.optim.elr < 1e-2 else "divergence"
    return {"status": "finished", "regime": regime, "epoch": 1.0, "elr": config.optim.elr}


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    from spherelab import SweepSpec, run_sweep

    out = tmp_path_factory.mktemp("docs") / "sweep"
    spec = SweepSpec(elrs=(1e-3, 1e-1), axes={"optim.momentum": (0.0,)})
    run_sweep(spec, out, runner=_fake_runner, pack=1, progress=False)
    return out


def test_run_files_lists_the_summary_csv_columns_in_order(sweep_dir):
    header = (sweep_dir / "summary.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    documented = _documented("### summary.csv")
    assert header == [*documented[:2], "optim.momentum", *documented[2:]]


def test_run_files_lists_exactly_the_sweep_json_keys(sweep_dir):
    stored = json.loads((sweep_dir / "sweep.json").read_text(encoding="utf-8"))
    assert sorted(stored) == sorted(_documented("### sweep.json", 0))
    assert sorted(stored["spec"]) == sorted(_documented("### sweep.json", 1))


def test_run_files_lists_exactly_the_boundary_keys_and_the_report_files(sweep_dir):
    bounds = json.loads((sweep_dir / "boundaries.json").read_text(encoding="utf-8"))
    assert len(bounds) == 1 and sorted(bounds[0]) == sorted(_documented("### boundaries.json"))
    assert (bounds[0]["below"], bounds[0]["above"]) == ("convergence", "divergence")
    assert (sweep_dir / "report.html").is_file()
    figures = _section("### figures/")
    for path in (sweep_dir / "figures").iterdir():  # one group: no `_0`, `_1` suffixes
        assert f"`{path.stem}`" in figures and path.suffix in (".png", ".svg")
