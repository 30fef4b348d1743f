"""The shells that run the domain: one poll cycle, the daemon, the one-shot check, the
wiring that builds them from settings, and reload."""
