"""cloudpacs hl7 service."""
