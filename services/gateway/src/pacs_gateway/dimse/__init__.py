"""The DIMSE services the gateway answers as SCP, on one handler base.

- :mod:`.handler_base`: the admitted caller, the deadline, exception to DIMSE status, metrics;
- :mod:`.codes`: SOP class UIDs and DIMSE status codes;
- :mod:`.c_store` (Storage, PS3.4 B), :mod:`.c_find` (Q/R C-FIND, PS3.4 C.4.1),
  :mod:`.retrieve` (Q/R C-MOVE and C-GET, PS3.4 C.4.2-C.4.3), :mod:`.commitment` (Storage
  Commitment Push Model, PS3.4 J);
- :mod:`.find_identifier`, :mod:`.retrieve_request`: identifiers to index queries;
- retrieve sends each instance as stored or as the transcoder service converted it;
- :mod:`.contexts`: the presentation contexts accepted; :mod:`.metrics`: DICOM metrics.
"""
