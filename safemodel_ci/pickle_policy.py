"""PLACEHOLDER until the allowlist lands (issue 2)."""
TABLES_VERSION = "0"
