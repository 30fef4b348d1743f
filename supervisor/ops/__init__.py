"""What an operator and a platform see of a running daemon: the HTTP listener, liveness and
readiness, Prometheus metrics, systemd notifications and session counts."""
