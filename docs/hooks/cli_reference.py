"""MkDocs hook: the command-line reference, generated from ``mambaseg.cli.build_parser`` at build time.

A page holding the line ``<!-- mambaseg-cli-reference -->`` gets it replaced by the ``--help`` text of ``mambaseg``
and of every subcommand, in the parser's order, so the reference cannot drift from ``cli.py``. The help is
formatted at a fixed width (100 columns), whatever the terminal, so two builds give the same page.
"""

from __future__ import annotations

import argparse
import os

MARKER = "<!-- mambaseg-cli-reference -->"
WIDTH = "100"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps the subcommands in its (private but stable) action list
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def cli_reference() -> str:
    """Markdown: ``mambaseg --help``, then one section per subcommand with its ``--help``."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH  # argparse sizes its help to $COLUMNS
    try:
        from mambaseg.cli import build_parser

        parser = build_parser()
        parts = ["## mambaseg", "", "```text", parser.format_help().rstrip(), "```", ""]
        for name, sub in _subparsers(parser).items():
            parts += [f"## mambaseg {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Replace the marker line with the generated reference."""
    if MARKER in markdown:
        return markdown.replace(MARKER, cli_reference())
    return markdown
