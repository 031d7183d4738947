"""HTTP handlers: parse the request, call a service or a store, answer JSON (or a file)."""
