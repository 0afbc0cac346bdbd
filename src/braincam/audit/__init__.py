"""Audits: does the data carry shortcuts (:mod:`braincam.audit.data`), does the model
use them (:mod:`braincam.audit.model`). Both report :class:`~braincam.audit.findings.Finding`."""
