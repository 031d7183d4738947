"""The server's long-lived parts: imports, reconstruction jobs, the session hub, invites, the ledger service, PACS."""
