"""A small document model for the report: blocks rendered to Markdown (with PNGs beside it) and to one
self-contained HTML file (PNGs embedded), so both say exactly the same thing."""

from __future__ import annotations

import base64
import html
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from lightning_ae.files import atomic_write


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Figure:
    path: Path  # a PNG on disk
    caption: str


Block = Heading | Paragraph | Table | Figure


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)

    def write(self, folder: Path) -> tuple[Path, Path]:
        """report.md with its figures under figures/, and report.html; both written atomically.

        Figures of an earlier report that this one does not show are removed, so figures/ holds exactly its own.
        """
        figures = folder / "figures"
        figures.mkdir(parents=True, exist_ok=True)
        shown: set[str] = set()
        markdown, page = [f"# {self.title}", ""], [_HTML_HEAD.format(title=html.escape(self.title))]
        page.append(f"<h1>{html.escape(self.title)}</h1>")
        for number, block in enumerate(self.blocks):
            if isinstance(block, Heading):
                markdown += [f"{'#' * block.level} {block.text}", ""]
                page.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
            elif isinstance(block, Paragraph):
                markdown += [block.text, ""]
                page.append(f"<p>{html.escape(block.text)}</p>")
            elif isinstance(block, Table):
                markdown += ["| " + " | ".join(block.header) + " |", "|" + "---|" * len(block.header)]
                markdown += ["| " + " | ".join(row) + " |" for row in block.rows]
                markdown += (["", f"*{block.caption}*"] if block.caption else []) + [""]
                cells = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
                body = "".join(
                    "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block.rows
                )
                caption = f"<caption>{html.escape(block.caption)}</caption>" if block.caption else ""
                page.append(f"<table>{caption}<tr>{cells}</tr>{body}</table>")
            elif isinstance(block, Figure):
                name = f"{number:03d}-{block.path.name}"
                shutil.copyfile(block.path, figures / name)
                shown.add(name)
                markdown += [f"![{block.caption}](figures/{name})", "", f"*{block.caption}*", ""]
                data = base64.b64encode(block.path.read_bytes()).decode()
                page.append(
                    f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.caption)}">'
                    f"<figcaption>{html.escape(block.caption)}</figcaption></figure>"
                )
        page.append("</body></html>")
        md_path, html_path = folder / "report.md", folder / "report.html"
        with atomic_write(md_path, "w") as handle:
            handle.write("\n".join(markdown))
        with atomic_write(html_path, "w") as handle:
            handle.write("\n".join(page))
        for stale in figures.glob("*.png"):
            if stale.name not in shown:
                stale.unlink()
        return md_path, html_path


_HTML_HEAD = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.45}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #bbb;padding:.25em .6em;text-align:right}}
caption{{caption-side:bottom;font-style:italic;padding:.3em}}img{{max-width:100%}}
figcaption{{font-style:italic}}</style></head><body>"""
