"""The lab runtime: a topology read from the compose files, and backends that realise it."""
