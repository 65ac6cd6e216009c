"""Build one self-contained HTML page (figures embedded as base64 PNG) for reports."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spherelab.io import atomic_write_text

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { border-bottom: 2px solid #345; padding-bottom: .2em; }
h2 { color: #345; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 3px 8px; text-align: right; }
th { background: #eef; }
img { max-width: 100%; border: 1px solid #ddd; margin: .5em 0; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: 0.85em; }
.convergence { background: #e3f2e3; } .chaotic_equilibrium { background: #fff4d6; }
.divergence { background: #fbe0e0; }
.failed { background: #ececec; color: #555; font-style: italic; }
"""


@dataclass
class Page:
    """An HTML page assembled from blocks; `write` produces one file with nothing external."""

    title: str
    blocks: list[str] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str) -> None:
        self.blocks.append(f"<p>{html.escape(text)}</p>")

    def figure(self, png_path: str | Path, caption: str = "") -> None:
        data = base64.b64encode(Path(png_path).read_bytes()).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.blocks.append(
            f'<figure><img alt="{html.escape(caption or Path(png_path).stem)}" '
            f'src="data:image/png;base64,{data}">{cap}</figure>'
        )

    def table(
        self,
        header: Sequence[str],
        rows: Iterable[Sequence[object]],
        row_class: Sequence[str] | None = None,
    ) -> None:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = []
        for i, row in enumerate(rows):
            cls = f' class="{html.escape(row_class[i])}"' if row_class else ""
            cells = "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row)
            body.append(f"<tr{cls}>{cells}</tr>")
        self.blocks.append(f"<table><tr>{head}</tr>{''.join(body)}</table>")

    def preformatted(self, text: str) -> None:
        self.blocks.append(f"<pre>{html.escape(text)}</pre>")

    def render(self) -> str:
        title = html.escape(self.title)
        return (
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{title}</h1>"
            + "\n".join(self.blocks)
            + "</body></html>"
        )

    def write(self, path: str | Path) -> Path:
        """Write the page (atomically: a reader never sees half a page); returns its path."""
        path = Path(path)
        atomic_write_text(path, self.render())
        return path


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
