"""Model audit: does the classifier look at the tumour or at shortcuts?

One module per check, each a :class:`~braincam.audit.model.base.Check` registered in
:data:`~braincam.audit.model.base.CHECKS`: attention, localization, faithfulness, sanity,
counterfactual. :func:`braincam.audit.model.run.audit_model` runs them all on a trained
run and writes ``audit.json`` plus a per-image CSV.
"""

from braincam.audit.model import (  # noqa: F401  (registers the checks)
    attention,
    counterfactual,
    faithfulness,
    localization,
    sanity,
)
from braincam.audit.model.base import (
    CHECKS,
    AuditBatch,
    AuditSettings,
    Check,
    CheckOutput,
    ModelHandle,
)

__all__ = ["CHECKS", "AuditBatch", "AuditSettings", "Check", "CheckOutput", "ModelHandle"]
