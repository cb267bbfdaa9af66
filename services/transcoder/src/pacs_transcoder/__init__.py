"""cloudpacs transcoder: transfer-syntax conversion and the compress-on-store policy."""
