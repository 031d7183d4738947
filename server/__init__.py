"""The aiohttp + python-socketio application, its storage and jobs, and the `theatrum` command line.

The only package that does I/O policy: it imports `reconstruction` and `sessions`, never the reverse.
"""
