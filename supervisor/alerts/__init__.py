"""Alerts: episodes to messages, grouping, the queue, channels."""
