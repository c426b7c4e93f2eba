"""``python -m dicom_node.cli``: the same command line as the ``dicom-node`` script."""

from dicom_node.cli import app

app()
