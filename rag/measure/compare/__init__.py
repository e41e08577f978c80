"""`rag compare`: the small and the large model side by side.

Latency (warm short prompts, and the QA questions), cold start (``--cold``), memory of the
model server processes and of this process with its index, gold-answer quality on a QA set,
a rubric judged by the large model, and the cost story under the configured price profiles.
``run_comparison`` returns one dict; rag.report draws it, the CLI prints it.

The package: ``options`` (CompareOptions), ``run`` (the measurement and its report dict),
``cold`` (cold start of the embedded servers) and ``provenance`` (settings, versions, files).
"""

from __future__ import annotations

from rag.measure.compare.cold import start_cold
from rag.measure.compare.options import CompareOptions
from rag.measure.compare.provenance import settings_of
from rag.measure.compare.run import DEFAULT_PROMPTS, ROLES, compare_models, run_comparison

__all__ = [
    "DEFAULT_PROMPTS",
    "ROLES",
    "CompareOptions",
    "compare_models",
    "run_comparison",
    "settings_of",
    "start_cold",
]
