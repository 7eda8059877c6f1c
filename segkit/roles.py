"""The planted roles of the testbed's segments, and which of them the answer needs: one vocabulary shared by the
testbed that plants them (``segkit.synth``), the oracle training mode (``segkit.modes``) and the analyses that score
selections against them (``segkit.analysis``), so none of these imports another to learn a role's name.

    >>> [r for r in ROLES if is_useful(r)]
    ['core', 'verify', 'correction']
"""
from __future__ import annotations

# every role a segment can have, in the order tables and legends list them
ROLES = ("core", "verify", "correction", "repeat", "truncated", "distractor", "final")
# the roles whose segment the answer needs or checks: the planted truth a selection is scored against
USEFUL = frozenset({"core", "verify", "correction"})


def is_useful(role: str) -> bool:
    """Whether a planted role is one the answer needs or checks (in ``USEFUL``)."""
    return role in USEFUL
