"""Data audit: image properties, shortcut probes, duplicates and acquisition clusters.

One module per concern (``properties``, ``separation``, ``probes``, ``duplicates``,
``clusters``), thresholds and findings in ``rules``, the whole audit in ``run``. Import
``braincam.audit.data.run.audit_data`` for the full audit.
"""
