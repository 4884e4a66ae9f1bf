"""Great Expectations glue: reviewed suite files in, validation results pushed down to SQL out.

Import from here. The rooms:

- :mod:`~shelfguard.quality.suites`: the suite files (``expectations/*.yml``), read and
  rendered against the policy, and which gate runs which suite;
- :mod:`~shelfguard.quality.warehouse`: read-only engines on the warehouse (DuckDB or
  PostgreSQL) and rows fetched from it;
- :mod:`~shelfguard.quality.checks`: one check's outcome, and GX's results turned into checks;
- :mod:`~shelfguard.quality.gx_run`: the suites validated by GX in the warehouse;
- :mod:`~shelfguard.quality.data_docs` and :mod:`~shelfguard.quality.gx_views`: the Data Docs
  the GX context renders.
"""

from shelfguard.quality.checks import SAMPLE_LIMIT, check
from shelfguard.quality.data_docs import docs_index, template_cache_dir
from shelfguard.quality.gx_run import QualityReport, SuiteRun, build_suite, run_suites
from shelfguard.quality.suites import (
    SEVERITIES,
    ExpectationSpec,
    RowScope,
    Severity,
    SuiteError,
    SuiteSpec,
    default_suites_dir,
    load_suite,
    suite_gates,
    suites_of,
)
from shelfguard.quality.warehouse import fetch_rows, open_warehouse

__all__ = [
    "SAMPLE_LIMIT",
    "SEVERITIES",
    "ExpectationSpec",
    "QualityReport",
    "RowScope",
    "Severity",
    "SuiteError",
    "SuiteRun",
    "SuiteSpec",
    "build_suite",
    "check",
    "default_suites_dir",
    "docs_index",
    "fetch_rows",
    "load_suite",
    "open_warehouse",
    "run_suites",
    "suite_gates",
    "suites_of",
    "template_cache_dir",
]
