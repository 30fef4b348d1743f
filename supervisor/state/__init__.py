"""Where supervision outlives a process: the store protocol, the SQLite state file (its
schema, its safety as a file) and the reports read from it."""
