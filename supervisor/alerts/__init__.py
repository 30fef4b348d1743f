"""Alerts: episodes to messages, grouping, the queue, the channels (Apprise imported lazily).

``build`` makes the channels from ``settings.alerts``. Nothing is imported here.
"""
