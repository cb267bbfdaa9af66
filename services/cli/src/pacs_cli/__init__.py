"""The ``pacs`` command: run a local cloudpacs stack."""
