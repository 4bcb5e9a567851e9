"""Execute notebooks/homework.ipynb with nbclient into an output copy (the stored notebook keeps no outputs).

    python scripts/execute_notebook.py [--fast] [--output notebooks/runs/homework.ipynb]

Without --fast the notebook runs in its full setting (the recipes' real lengths: hours on 2 CPU cores). The kernel
runs in the notebook's folder, so its runs go to notebooks/runs/ (ignored by git); `make notebook` calls this.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "homework.ipynb"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="the fast setting (small slices, 3-4 min)")
    parser.add_argument("--notebook", type=Path, default=NOTEBOOK)
    parser.add_argument("--output", type=Path, default=REPO / "notebooks" / "runs" / "homework.ipynb")
    parser.add_argument("--timeout", type=int, default=None, help="seconds per cell (default: none)")
    args = parser.parse_args()
    os.environ["LIGHTNING_AE_NOTEBOOK_FAST"] = "1" if args.fast else "0"  # the kernel inherits it
    notebook = nbformat.read(args.notebook, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=args.timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(args.notebook.parent)}},
    )
    started = time.perf_counter()
    try:
        client.execute()
    finally:  # what ran, with the failing cell's error, is kept either way
        args.output.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, args.output)
        print(f"{args.output} ({'fast' if args.fast else 'full'}): {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
