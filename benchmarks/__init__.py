"""shelfguard's benchmark harness: ``make bench`` / ``python -m benchmarks.run``.

Each stage measures our code and its baseline in the same child process on the same
data; see ``BENCHMARKS.md`` for what every row means and the figures recorded so far.
"""

from pathlib import Path

#: The repository checkout (the folder holding ``benchmarks/`` and ``dags/``).
ROOT = Path(__file__).resolve().parents[1]
