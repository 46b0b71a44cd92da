"""MkDocs hook: publish the repository's ``examples/*.py`` as notebook pages of the site.

The examples are jupytext percent-format scripts in ``examples/`` at the
repository root, outside ``docs/``; ``mkdocs-jupyter`` turns them into pages
(executed at build time, figures and printed output included).  This hook

* ``on_config``: appends every ``examples/*.py`` to the nav section titled
  ``Examples``, by file name, titled by the first heading of its first Markdown
  cell, so a new example appears in the navigation without editing
  ``mkdocs.yml``; and sets ``ARPROB_FIGURES`` (unless it is set) to
  ``examples/figures/``, where the examples also save their figures when run as
  scripts: the notebook kernel has no ``__file__`` to find that folder by;
* ``on_files``: adds each script as a file ``examples/NAME.py`` whose source
  folder is the repository (not a generated file: ``mkdocs-jupyter`` wraps the
  file and reads the script through ``src_dir``).  It runs before
  ``mkdocs-jupyter``'s own ``on_files`` (event priority), which turns the files
  matching its ``include`` patterns into pages at ``examples/NAME/``.  Links such as ``[..](examples/NAME.py)`` from
  ``docs/`` pages resolve to them;
* ``on_serve``: watches ``examples/`` so that ``mkdocs serve`` reloads on edits.

The pages are executed with ``allow_errors: false`` (``mkdocs.yml``), so an
example that raises fails the build: the docs build is where the examples run
in CI.  ``ARPROB_EXAMPLES_EXECUTE=false`` renders them without running them
(a quick local preview: no outputs, no figures).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files
from nav_sections import extend_nav_section  # docs/hooks/nav_sections.py (mkdocs puts hooks/ on the path)

log = logging.getLogger("mkdocs.hooks.examples")

REPOSITORY = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = REPOSITORY / "examples"
SECTION = "Examples"

# the first Markdown heading of a percent-format script: "# # Title"
_HEADING = re.compile(r"^#\s+#\s+(?P<title>.+?)\s*$", re.MULTILINE)


def example_paths() -> list[Path]:
    """The example scripts, by file name."""
    if not EXAMPLES_DIR.is_dir():
        return []
    return sorted(EXAMPLES_DIR.glob("*.py"))


def title_of(path: Path) -> str:
    """The first level-one Markdown heading of a percent-format script, or its file name."""
    match = _HEADING.search(path.read_text(encoding="utf-8"))
    return match["title"] if match else path.stem.replace("_", " ").capitalize()


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    # the kernel that runs a page inherits this process's environment
    os.environ.setdefault("ARPROB_FIGURES", str(EXAMPLES_DIR / "figures"))
    extend_nav_section(config, SECTION, [(title_of(path), f"examples/{path.name}") for path in example_paths()],
                       log, "examples")
    return config


@event_priority(100)  # before mkdocs-jupyter's on_files, which makes pages of the files added here
def on_files(files: Files, config: MkDocsConfig) -> Files:
    for path in example_paths():
        uri = f"examples/{path.name}"
        if files.get_file_from_path(uri) is not None:
            log.warning("examples hook: docs/%s shadows %s; remove it from docs/", uri, path)
            continue
        files.append(File(uri, src_dir=str(REPOSITORY), dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    return files


def on_serve(server, config: MkDocsConfig, builder):
    if EXAMPLES_DIR.is_dir():
        server.watch(str(EXAMPLES_DIR))
    return server
