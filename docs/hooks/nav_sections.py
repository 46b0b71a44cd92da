"""Shared by the proofs and examples hooks: add pages to a nav section of mkdocs.yml (not a hook itself)."""

from __future__ import annotations

import logging

from mkdocs.config.defaults import MkDocsConfig


def extend_nav_section(config: MkDocsConfig, title: str, entries, log: logging.Logger, what: str) -> None:
    """Append ``(label, uri)`` entries (``label=None``: the page's own title) to the nav section ``title``.

    Pages the section already lists (as ``uri`` or ``{label: uri}``) are left as they are; without such a
    section, ``log`` warns that the ``what`` pages are not in the nav.
    """
    nav = config.nav
    if not nav:
        return
    for entry in nav:
        if isinstance(entry, dict) and title in entry:
            section = entry[title]
            if not isinstance(section, list):
                section = entry[title] = [section] if section else []
            listed = {item if isinstance(item, str) else next(iter(item.values())) for item in section}
            for label, uri in entries:
                if uri not in listed:
                    section.append(uri if label is None else {label: uri})
            return
    log.warning("%s hook: no nav section titled %r; %s pages are not in the nav", what, title, what)
