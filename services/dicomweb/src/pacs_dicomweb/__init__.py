"""cloudpacs DICOMweb service (PS3.18): STOW-RS, QIDO-RS and WADO-RS over the indexer's
QueryService and storage's StorageService."""
