"""Catalogue sources: where ingest_catalogue gets its rows from."""
