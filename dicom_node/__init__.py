"""dicom-node: a DICOM AI node for acute neuro CT.

A modality or PACS sends CT series over DIMSE C-STORE; the node decides when a
series is complete and which pipeline fits it, runs the pipeline in worker
processes and sends the results back as a DICOM Segmentation and a TID 1500
Comprehensive 3D SR. See ``README.md`` and ``docs/``.
"""

__version__ = "0.1.0"
