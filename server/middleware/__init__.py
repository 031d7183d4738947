"""aiohttp middleware: access, CORS, gzip, JSON errors, metrics, plain websockets."""
