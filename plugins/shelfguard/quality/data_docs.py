"""Data Docs: where the GX context under ``$SHELFGUARD_HOME`` keeps them, and the site
configuration that renders them with the cached views of
:mod:`shelfguard.quality.gx_views` (imported only when a context is opened: it imports GX).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The GX context's folder under the gx root; the Data Docs are written inside it.
GX_DIR = "gx"


def docs_index(gx_root: Path) -> Path:
    """Where the Data Docs index of the context under ``gx_root`` is written."""
    return gx_root / GX_DIR / "uncommitted" / "data_docs" / "local_site" / "index.html"


def template_cache_dir(gx_root: Path) -> Path:
    """Where the compiled Data Docs templates of the context under ``gx_root`` are kept."""
    return gx_root / GX_DIR / "uncommitted" / "template_cache"


def _use_cached_views(context: Any, directory: Path) -> bool:
    """Point the local Data Docs site at the views that keep compiled templates
    (:mod:`shelfguard.quality.gx_views`); True when the site's configuration changed."""
    from shelfguard.quality.gx_views import site_views

    sites = dict(context.variables.data_docs_sites or {})
    site = dict(sites.get("local_site") or {})
    if not site:
        return False
    wanted = site_views(directory)
    if all(site.get(key) == value for key, value in wanted.items()):
        return False
    site.update(wanted)
    sites["local_site"] = site
    context.variables.data_docs_sites = sites
    return True
