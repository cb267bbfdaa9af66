"""Shared code of the cloudpacs services.

Settings, logging, the gRPC server bootstrap, the error hierarchy, Kafka events, the S3 client
factory and DICOM helpers live here once, so that no service copies them.
"""
