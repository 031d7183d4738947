"""The `theatrum` command line."""
