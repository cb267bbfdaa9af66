"""Test support shared by every cloudpacs test suite and benchmark (a workspace package, so
that no service's tests import another service's tests or the ``pacs`` CLI).

- :mod:`pacs_testkit.channels`: gRPC channels as a local client (mutual TLS as ``cli``).
- :mod:`pacs_testkit.kafka`: a consumer group positioned at the end of the instances topic.
- :mod:`pacs_testkit.postgres`: scratch databases on the project's PostgreSQL cluster.
- :mod:`pacs_testkit.indexer`: a real indexer in-process, on a group of its own.
- :mod:`pacs_testkit.transcoder`: a real transcoder in-process.
- :mod:`pacs_testkit.hydra`: bearer tokens for a tenant and roles from the local hydra.
- :mod:`pacs_testkit.prometheus`: Debian's ``prometheus`` scraping test services, and the
  Grafana dashboards' panel queries asked of it.
"""
