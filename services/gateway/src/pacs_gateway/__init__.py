"""cloudpacs gateway: the DICOM front door (DIMSE SCP/SCU) and the IngestService."""
