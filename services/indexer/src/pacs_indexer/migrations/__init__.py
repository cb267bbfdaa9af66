"""Alembic migrations of the index database (SQLite and PostgreSQL)."""
