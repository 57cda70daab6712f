"""The maskbench audit as a pytest test, parametrized by the plugin over model x strategy x claim.

Collected only when pytest runs with ``--model`` (see :mod:`maskbench.audit.plugin`);
each test id reads ``<model>-<strategy>-<claim>``.
"""

from __future__ import annotations

import pytest

from maskbench.audit.options import AuditCase
from maskbench.audit.plugin import run_audit_case
from maskbench.audit.session import AuditSession


def test_audit(
    audit_case: AuditCase, maskbench_audit: AuditSession, request: pytest.FixtureRequest
) -> None:
    """Claimed: the claim holds on the reference and drawn examples. Else: measured."""
    run_audit_case(request, maskbench_audit, audit_case)
