"""Data Docs views that keep their compiled templates: configured, not patched.

GX builds a new Jinja environment for every page it renders, so each gate run
compiled the same few dozen templates again, once per page: most of the cost of
rendering the Data Docs. These subclasses of GX's public page views give their
environment a Jinja bytecode cache on disk. They are named in the Data Docs site's
own configuration (``site_section_builders.*.view`` and ``site_index_builder.view``,
GX's documented way to choose a view class), so GX itself is never modified. Jinja
keys each compiled template by its name and a checksum of its source, so a GX upgrade
cannot serve a stale page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from great_expectations.render.view.view import DefaultJinjaIndexPageView, DefaultJinjaPageView

_caches: dict[str, jinja2.BytecodeCache] = {}


def _cache(directory: str) -> jinja2.BytecodeCache:
    """One bytecode cache per folder, shared by every view of this process."""
    if directory not in _caches:
        Path(directory).mkdir(parents=True, exist_ok=True)
        _caches[directory] = jinja2.FileSystemBytecodeCache(directory)
    return _caches[directory]


class CachedJinjaPageView(DefaultJinjaPageView):
    """GX's page view, with its compiled templates kept in ``template_cache_directory``."""

    def __init__(self, template_cache_directory: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.env.bytecode_cache = _cache(template_cache_directory)


class CachedJinjaIndexPageView(DefaultJinjaIndexPageView):
    """GX's index page view, with its compiled templates kept in ``template_cache_directory``."""

    def __init__(self, template_cache_directory: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.env.bytecode_cache = _cache(template_cache_directory)


def site_views(template_cache_directory: Path) -> dict[str, Any]:
    """The parts of a ``SiteBuilder`` configuration that select the cached views."""

    def view(name: str) -> dict[str, str]:
        return {
            "module_name": __name__,
            "class_name": name,
            "template_cache_directory": str(template_cache_directory),
        }

    return {
        "site_index_builder": {
            "class_name": "DefaultSiteIndexBuilder",
            "view": view(CachedJinjaIndexPageView.__name__),
        },
        "site_section_builders": {
            "expectations": {"view": view(CachedJinjaPageView.__name__)},
            "validations": {"view": view(CachedJinjaPageView.__name__)},
        },
    }
