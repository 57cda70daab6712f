"""The maskbench audit: test the claims strategies make, measure the ones they do not.

From the command line (the pytest plugin, :mod:`maskbench.audit.plugin`)::

    pytest --model resnet18 --maskbench-report out.json

From Python, without pytest::

    import maskbench as mb
    from maskbench.audit import AuditInputs, check_for, run_check

    inputs = AuditInputs(mb.get_strategy("blur"), mb.load_model("resnet18", weights="random"),
                         mb.sample_images(4, 160), batch_size=2)
    outcome = run_check(check_for("content_independence"), inputs, claimed=False)
    outcome.figures["content_sensitivity"].value

Modules: :mod:`~maskbench.audit.checks` (one check per claim), :mod:`~maskbench.audit.runner`
(reference figures + hypothesis search), :mod:`~maskbench.audit.drift` (the monotone
drift measure), :mod:`~maskbench.audit.scorecard` (records, JSON, Markdown),
:mod:`~maskbench.audit.baseline` (the CI gate), :mod:`~maskbench.audit.devices`
(worker -> GPU), :mod:`~maskbench.audit.options`, :mod:`~maskbench.audit.session`,
:mod:`~maskbench.audit.targets`, :mod:`~maskbench.audit.images`,
:mod:`~maskbench.audit.applicability`. Importing this package does not import pytest.
"""

from maskbench.audit.checks import CHECKS, AuditInputs, Check, Example, Figure, check_for
from maskbench.audit.runner import Outcome, SearchSettings, run_check

__all__ = [
    "CHECKS",
    "AuditInputs",
    "Check",
    "Example",
    "Figure",
    "Outcome",
    "SearchSettings",
    "check_for",
    "run_check",
]
