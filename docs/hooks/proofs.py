"""MkDocs hook: publish the repository's ``proofs/*.md`` as pages of the site.

The theorem files live in ``proofs/`` at the repository root, next to the
checks that pytest runs; they are not copied into ``docs/``.  This hook

* ``on_config``: appends every ``proofs/*.md`` to the nav section titled
  ``Proofs`` (``README.md`` first, titled "Format and checks", then by file
  name, titled by their first heading), so a new theorem file appears in the
  navigation without editing ``mkdocs.yml``;
* ``on_files``: adds each file as a generated page ``proofs/NAME.md``.
  ``proofs/README.md`` is published at ``proofs/readme/`` so that it does not
  collide with ``docs/proofs.md`` (the section index at ``proofs/``); links to
  ``README.md`` inside the proofs keep working because they resolve by source
  path.  Relative links that point outside the site (the check scripts, the
  package sources) are turned into plain text with the repository path, so
  the strict build does not fail on them.  Display equations written inline
  in a paragraph (``$$ ... $$``, as GitHub accepts) are given blocks of their
  own and list continuations are re-indented, so that Python-Markdown renders
  them as GitHub does (``markdown_fixes.py``);
* ``on_page_markdown``: replaces the marker ``<!-- proofs:list -->`` in
  ``docs/proofs.md`` by a list of the theorem pages with their titles;
* ``on_serve``: watches ``proofs/`` so that ``mkdocs serve`` reloads on edits.

``ARPROB_PROOFS_DIR`` overrides the folder (used for test builds).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import posixpath
import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page
from nav_sections import extend_nav_section  # docs/hooks/nav_sections.py (mkdocs puts hooks/ on the path)

log = logging.getLogger("mkdocs.hooks.proofs")


def _load_sibling(name: str):
    """Import ``docs/hooks/NAME.py`` by path (this folder is not a package)."""
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"arprob_docs_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_fixes = _load_sibling("markdown_fixes")

REPOSITORY = Path(__file__).resolve().parents[2]
PROOFS_DIR = Path(os.environ.get("ARPROB_PROOFS_DIR", REPOSITORY / "proofs"))
SECTION = "Proofs"
INDEX_PAGE = "proofs.md"
MARKER = "<!-- proofs:list -->"
README_TITLE = "Format and checks"

_LINK = re.compile(r"(?P<image>!?)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)(?P<title>\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^#\s+(?P<title>.+?)\s*#*\s*$", re.MULTILINE)


def proof_paths() -> list[Path]:
    """The proof files, ``README.md`` first, then by name."""
    if not PROOFS_DIR.is_dir():
        return []
    return sorted(PROOFS_DIR.glob("*.md"), key=lambda path: (path.name != "README.md", path.name))


def title_of(path: Path) -> str:
    """The first level-one heading of a Markdown file, or its file name."""
    match = _HEADING.search(path.read_text(encoding="utf-8"))
    return match["title"] if match else path.stem


def _rewrite_target(target: str, text: str, docs_dir: Path) -> str | None:
    """A replacement for a link leaving the site, or ``None`` to keep the link."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("#", "/")):
        return None  # external, anchor-only or already absolute
    path, _, anchor = target.partition("#")
    resolved = posixpath.normpath(posixpath.join("proofs", path))
    if resolved.startswith("proofs/") and resolved.endswith(".md") and (PROOFS_DIR / resolved[7:]).is_file():
        return None  # another proof page
    if resolved.startswith("docs/") and (docs_dir / resolved[5:]).is_file():
        suffix = f"#{anchor}" if anchor else ""
        return f"[{text}](/{resolved[5:]}{suffix})"
    # a repository file that is not part of the site: keep the text, name the path
    name = posixpath.basename(resolved)
    return text if name and name in text else f"{text} (`{resolved}`)"


def rewrite_links(markdown: str, docs_dir: Path) -> str:
    """Rewrite relative links of a proof file that would leave the site."""
    lines = markdown.split("\n")
    in_fence = False
    for index, line in enumerate(lines):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue

        def replace(match: re.Match) -> str:
            if match["image"]:
                return match.group(0)
            replacement = _rewrite_target(match["target"], match["text"], docs_dir)
            return match.group(0) if replacement is None else replacement

        lines[index] = _LINK.sub(replace, line)
    return "\n".join(lines)


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    # the README's own title ("Proofs") would repeat the section's
    entries = [(README_TITLE if path.name == "README.md" else None, f"proofs/{path.name}") for path in proof_paths()]
    extend_nav_section(config, SECTION, entries, log, "proofs")
    return config


def on_files(files: Files, config: MkDocsConfig) -> Files:
    docs_dir = Path(config.docs_dir)
    for path in proof_paths():
        uri = f"proofs/{path.name}"
        if files.get_file_from_path(uri) is not None:
            log.warning("proofs hook: docs/%s shadows %s; remove it from docs/", uri, path)
            continue
        content = path.read_text(encoding="utf-8")
        # GitHub-style display math and list indentation, for Python-Markdown
        content = _fixes.normalize_list_indentation(_fixes.separate_display_math(content))
        content = rewrite_links(content, docs_dir)
        file = File.generated(config, uri, content=content)
        if path.name == "README.md":
            # README.md would map to proofs/index.html, which docs/proofs.md already produces
            file.dest_uri = "proofs/readme/index.html" if config.use_directory_urls else "proofs/readme.html"
        files.append(file)
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if page.file.src_uri != INDEX_PAGE or MARKER not in markdown:
        return markdown
    theorems = [path for path in proof_paths() if path.name != "README.md"]
    if theorems:
        listing = "\n".join(f"- [{title_of(path)}](proofs/{path.name})" for path in theorems)
    else:
        listing = "*No theorem files were found in `proofs/` when this site was built.*"
    return markdown.replace(MARKER, listing)


def on_serve(server, config: MkDocsConfig, builder):
    if PROOFS_DIR.is_dir():
        server.watch(str(PROOFS_DIR))
    return server
