"""The section models of the node's settings, one module per area.

:class:`dicom_node.config.Settings` composes them and
:func:`dicom_node.config.load_settings` builds it; every model here is
importable from :mod:`dicom_node.config` too, which is where the rest of the
node takes them from. The models are pydantic models with ``extra="forbid"``
(``_Section`` of :mod:`dicom_node.settings.base`); their defaults are those of
the embedded ``dicom_node/defaults.toml``.

- :mod:`dicom_node.settings.network`: DICOM networking: the Storage SCP
  (``[dicom]``, TLS) and the export destinations (``[export]``).
- :mod:`dicom_node.settings.node`: storage, series completeness, workers,
  models, results, selection, retention and audit.
- :mod:`dicom_node.settings.web`: the web server, monitoring figures and the
  webhook notifications.

No module here imports :mod:`dicom_node.config` (it imports them).
"""
