"""Text fixes shared by the documentation hooks (pure functions on Markdown text).

Python-Markdown, which MkDocs uses, is stricter than GitHub and than
reStructuredText in two places that matter for arprob's docstrings and proofs:

* a list item keeps a second block (a paragraph, a displayed equation) only if
  the block is indented four spaces past the item's own indentation, and a new
  item after such a block needs a blank line before it
  (:func:`normalize_list_indentation`);
* ``pymdownx.arithmatex`` renders ``$$ ... $$`` as a displayed equation only
  when it is a block of its own, separated by blank lines, whereas GitHub also
  accepts it inside a paragraph (:func:`separate_display_math`).

Both functions leave fenced code blocks alone.
"""

from __future__ import annotations

import re

LIST_ITEM = re.compile(r"^(?P<indent>[ ]*)(?P<marker>(?:\d+[.)]|[-*+]))(?P<gap>[ ]+)\S")
FENCE = re.compile(r"^\s*(```|~~~)")


def indent_of(line: str) -> int:
    return len(line) - len(line.lstrip())


def fenced_lines(lines: list[str]) -> list[bool]:
    """For each line, whether it is part of a fenced code block (fences included)."""
    inside, marks = False, []
    for line in lines:
        if FENCE.match(line):
            marks.append(True)
            inside = not inside
        else:
            marks.append(inside)
    return marks


def normalize_list_indentation(text: str) -> str:
    """Re-indent list-item continuation lines to the item's indent plus four.

    reStructuredText and GitHub align continuation lines with the item text
    (two spaces after ``-``, three after ``1.``); Python-Markdown needs four to
    keep a block after a blank line inside the item.  Where an item spans
    several blocks, a blank line is inserted before the next item so that
    Python-Markdown starts a new item there instead of continuing a paragraph.
    """
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        fenced = fenced_lines(lines)
        match = LIST_ITEM.match(lines[index]) if not fenced[index] else None
        if not match:
            index += 1
            continue
        base = len(match["indent"])
        content = base + len(match["marker"]) + len(match["gap"])
        shift = base + 4 - content
        index += 1
        spans_blocks = False
        while index < len(lines):
            line = lines[index]
            if line.strip() and indent_of(line) <= base and not (fenced[index] and not FENCE.match(line)):
                # the next item or the end of the list
                if spans_blocks and LIST_ITEM.match(line) and lines[index - 1].strip():
                    lines.insert(index, "")
                break
            if not line.strip():
                spans_blocks = True
            elif shift > 0 and indent_of(line) >= content:
                lines[index] = " " * shift + line
            index += 1
    return "\n".join(lines)


def separate_display_math(text: str) -> str:
    """Give every ``$$ ... $$`` that starts a line a block of its own.

    The equation keeps the indentation of its first line; blank lines are put
    before and after it, and text after the closing ``$$`` on the same line
    continues as a new paragraph.
    """
    lines = text.split("\n")
    fenced = fenced_lines(lines)
    output: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        stripped = line.lstrip()
        if fenced[index] or not stripped.startswith("$$"):
            output.append(line)
            index += 1
            continue
        indent = line[: indent_of(line)]
        rest = stripped[2:]
        body: list[str] = []
        tail = ""
        if "$$" in rest:  # closes on the same line
            inner, _, tail = rest.partition("$$")
            body.append(inner)
        else:
            body.append(rest)
            index += 1
            while index < len(lines) and "$$" not in lines[index]:
                body.append(lines[index])
                index += 1
            if index < len(lines):
                inner, _, tail = lines[index].partition("$$")
                body.append(inner)
        if output and output[-1].strip():
            output.append("")
        output.append(f"{indent}$$")
        # every line at least as indented as the opening one, so it stays in its list item
        output.extend(
            item.rstrip() if position and indent_of(item) >= len(indent) else f"{indent}{item.strip()}"
            for position, item in enumerate(body)
            if item.strip()
        )
        output.append(f"{indent}$$")
        output.append("")
        if tail.strip():
            output.append(f"{indent}{tail.strip()}")
        index += 1
        if index < len(lines) and not lines[index].strip() and not output[-1].strip():
            index += 1  # avoid a double blank line
    return "\n".join(output)
