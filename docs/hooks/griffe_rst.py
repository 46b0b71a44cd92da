r"""Griffe extension: render the reStructuredText bits of arprob's numpydoc docstrings.

arprob's docstrings follow numpydoc, whose mathematics and cross-references are
reStructuredText (``.. math::`` blocks, ``:math:`` and ``:class:``/``:func:``
roles), while mkdocstrings renders docstring text as Markdown.  This extension
rewrites each docstring once, after the package is loaded and before it is
parsed into sections:

* ``.. math::`` blocks become ``$$ ... $$`` display blocks (one per
  blank-line-separated equation; multi-line equations with ``\\`` are wrapped
  in ``aligned``, as Sphinx does), rendered by ``pymdownx.arithmatex``;
* ``:math:`x``` becomes ``$x$``;
* ``:class:``, ``:func:``, ``:meth:``, ``:mod:``, ``:attr:``, ``:data:``,
  ``:exc:``, ``:obj:`` become *optional* autorefs: a link when the target is
  rendered somewhere in the site, plain code otherwise (never a warning);
  ``~`` shortens the title to the last component, as in Sphinx;
* a paragraph ending in ``::`` followed by an indented block (an RST literal
  block) becomes the paragraph ending in ``:`` and a fenced Python code block;
* a numpydoc entry that documents several names at once (``a, b : int`` in a
  Parameters or Attributes section) is split into one entry per name with the
  same description: griffe would otherwise give every name the default and
  annotation of the first;
* the continuation lines of list items are re-indented to four spaces past
  the marker (reStructuredText aligns them with the item text, three spaces
  for ``1.``; Markdown needs four to keep a displayed equation or a second
  paragraph inside the item);
* a path ``proofs/NAME.md`` in inline code becomes a link to that proof's page
  when the file exists (the proofs are added to the site by ``proofs.py``).

Functions decorated with hypothesis' ``@composite`` lose their first
parameter (``draw``) from the rendered signature, since callers never pass it.

The source files are not changed.  Registered in ``mkdocs.yml`` under
``plugins.mkdocstrings.handlers.python.options.extensions``.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any

import griffe


def _load_sibling(name: str):
    """Import ``docs/hooks/NAME.py`` by path (this folder is not a package)."""
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"arprob_docs_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


normalize_list_indentation = _load_sibling("markdown_fixes").normalize_list_indentation

_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<inline>.*)$")
_OPTION = re.compile(r"^[ \t]*:[a-z-]+:.*$")
_MATH_ROLE = re.compile(r":math:`(?P<body>[^`]+)`")
_XREF_ROLE = re.compile(r":(?:py:)?(?P<role>class|func|meth|mod|attr|data|exc|obj):`(?P<body>[^`]+)`")
_LITERAL_INTRO = re.compile(r"^(?P<text>.*?)(?P<space>\s?)::\s*$")
_SECTION_RULE = re.compile(r"^\s*-{3,}\s*$")
_GROUPED_ENTRY = re.compile(r"^(?P<names>\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)+)(?P<rest>\s*:.*)?$")
_NAMED_SECTIONS = {"parameters", "other parameters", "attributes", "keyword arguments", "other arguments"}
_PROOF_CODE = re.compile(r"``(?P<path>proofs/(?P<name>[\w.-]+)\.md)``")

# the repository's proofs/ folder; ARPROB_PROOFS_DIR overrides it (for test builds)
PROOFS_DIR = Path(os.environ.get("ARPROB_PROOFS_DIR", Path(__file__).resolve().parents[2] / "proofs"))


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip())


def _display(chunk: list[str], indent: str) -> list[str]:
    """One ``$$`` block for one equation (its lines already dedented)."""
    body = "\n".join(chunk)
    if "\\\\" in body and "\\begin" not in body:
        chunk = ["\\begin{aligned}", *chunk, "\\end{aligned}"]
    return ["", f"{indent}$$", *(f"{indent}{line}" for line in chunk), f"{indent}$$", ""]


def convert_math_blocks(text: str) -> str:
    """Replace every ``.. math::`` directive by ``$$`` display blocks."""
    lines = text.split("\n")
    output: list[str] = []
    index = 0
    while index < len(lines):
        match = _DIRECTIVE.match(lines[index])
        if not match:
            output.append(lines[index])
            index += 1
            continue
        indent = match["indent"]
        base = len(indent)
        index += 1
        content: list[str] = [match["inline"]] if match["inline"].strip() else []
        # options (:label:, :nowrap:) directly under the directive are dropped
        while (
            index < len(lines)
            and lines[index].strip()
            and _OPTION.match(lines[index])
            and _indent_of(lines[index]) > base
        ):
            index += 1
        body: list[str] = []
        while index < len(lines) and (not lines[index].strip() or _indent_of(lines[index]) > base):
            body.append(lines[index])
            index += 1
        while body and not body[-1].strip():
            body.pop()
        depth = min((_indent_of(line) for line in body if line.strip()), default=0)
        equations: list[list[str]] = [content] if content else []
        current: list[str] = []
        for line in body:
            if line.strip():
                current.append(line[depth:].rstrip())
            elif current:
                equations.append(current)
                current = []
        if current:
            equations.append(current)
        for equation in equations:
            output.extend(_display(equation, indent))
    return "\n".join(output)


def convert_literal_blocks(text: str) -> str:
    """``text::`` + blank line + indented block  ->  ``text:`` + fenced code block."""
    lines = text.split("\n")
    output: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        match = _LITERAL_INTRO.match(line)
        followed_by_blank = index + 1 < len(lines) and not lines[index + 1].strip()
        if not match or line.lstrip().startswith(".. ") or not followed_by_blank:
            output.append(line)
            index += 1
            continue
        base = _indent_of(line)
        end = index + 1
        while end < len(lines) and (not lines[end].strip() or _indent_of(lines[end]) > base):
            end += 1
        block = lines[index + 1 : end]
        while block and not block[-1].strip():
            block.pop()
        while block and not block[0].strip():
            block.pop(0)
        if not block:
            output.append(line)
            index += 1
            continue
        depth = min(_indent_of(item) for item in block if item.strip())
        text_part = match["text"]
        # "Example::" -> "Example:"; "text ::" -> "text"; a lone "::" disappears
        intro = text_part + ":" if text_part.strip() and not match["space"] else text_part
        if intro.strip():
            output.append(intro.rstrip())
        indent = " " * base
        output.append("")
        output.append(f"{indent}```python")
        output.extend(f"{indent}{item[depth:]}" if item.strip() else "" for item in block)
        output.append(f"{indent}```")
        output.append("")
        index = end
    return "\n".join(output)


def split_grouped_entries(text: str) -> str:
    """Split ``a, b : type`` entries of named numpydoc sections into one entry per name."""
    lines = text.split("\n")
    output: list[str] = []
    section = None
    index = 0
    while index < len(lines):
        line = lines[index]
        if index + 1 < len(lines) and _SECTION_RULE.match(lines[index + 1]) and line.strip():
            section = line.strip().lower()
            output.extend([line, lines[index + 1]])
            index += 2
            continue
        match = _GROUPED_ENTRY.match(line.strip()) if section in _NAMED_SECTIONS else None
        if not match:
            output.append(line)
            index += 1
            continue
        base = _indent_of(line)
        end = index + 1
        while end < len(lines) and (not lines[end].strip() or _indent_of(lines[end]) > base):
            end += 1
        description = lines[index + 1 : end]
        while description and not description[-1].strip():
            description.pop()
        rest = match["rest"] or ""
        for name in re.split(r"\s*,\s*", match["names"]):
            output.append(" " * base + name + rest)
            output.extend(description)
        index = index + 1 + len(description)
    return "\n".join(output)


def _xref(match: re.Match, resolve) -> str:
    body = match["body"].strip()
    explicit = re.fullmatch(r"(?P<title>.+?)\s*<(?P<target>[^>]+)>", body)
    if explicit:
        title, target = explicit["title"], explicit["target"]
    else:
        target = body.lstrip("~").lstrip(".")
        title = target.rsplit(".", 1)[-1] if body.startswith("~") else target
        if match["role"] in ("func", "meth"):
            title += "()"
    identifier = resolve(target.lstrip("~").lstrip("."))
    return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'


def _proof_link(match: re.Match) -> str:
    if (PROOFS_DIR / f"{match['name']}.md").is_file():
        # absolute links are resolved against docs_dir (validation.links.absolute_links)
        return f"[`{match['path']}`](/{match['path']})"
    return match.group(0)


class RstToMarkdown(griffe.Extension):
    """Rewrite reStructuredText math and roles in docstrings to Markdown."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        collection = loader.modules_collection

        def visit(obj: griffe.Object) -> None:
            if obj.docstring is not None:
                obj.docstring.value = self.convert(obj.docstring.value, obj, collection)
            for member in obj.members.values():
                if not member.is_alias:
                    visit(member)

        visit(pkg)

    def on_function(self, *, func: griffe.Function, **kwargs: Any) -> None:
        decorated = any(str(decorator.value).split(".")[-1] == "composite" for decorator in func.decorators)
        if decorated and len(func.parameters) and func.parameters[0].name == "draw":
            del func.parameters["draw"]

    @staticmethod
    def convert(text: str, obj: griffe.Object, collection) -> str:
        def resolve(target: str) -> str:
            candidates = [target]
            scope = obj if obj.is_module or obj.is_class else obj.parent
            while scope is not None:
                candidates.append(f"{scope.path}.{target}")
                scope = scope.parent
            for candidate in candidates:
                try:
                    return collection[candidate].canonical_path
                except Exception:  # unknown or unresolvable: keep the target as written
                    continue
            return target

        text = convert_math_blocks(text)
        text = convert_literal_blocks(text)
        text = split_grouped_entries(text)
        text = normalize_list_indentation(text)
        text = _MATH_ROLE.sub(lambda match: f"${match['body'].strip()}$", text)
        text = _XREF_ROLE.sub(lambda match: _xref(match, resolve), text)
        return _PROOF_CODE.sub(_proof_link, text)
