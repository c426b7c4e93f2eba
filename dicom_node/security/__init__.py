"""Transport security shared by the Storage SCP and the Storage SCU (DICOM TLS)."""
