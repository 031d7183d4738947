"""Where the server keeps things: the catalog, content-addressed files, the room database, checkpoints, keys."""
