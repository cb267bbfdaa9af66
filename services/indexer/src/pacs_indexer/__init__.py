"""cloudpacs indexer: keeps the index database of patients, studies, series and instances up to
date from storage events, and answers DICOM queries (QueryService)."""
