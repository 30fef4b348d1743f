"""Alerts: episodes to messages, grouping, the queue, the channels.

* ``outbox``: the protocol of the queue the store keeps (rows waiting per channel);
* ``text``: the words of a message for a group of transitions;
* ``channels``: where messages go (Apprise, loaded on first use; Alertmanager);
* ``sender``: the background loop that groups the outbox's rows and sends them.

May import the domain, the state store and the settings; Apprise only inside functions, so a process
without alerts never loads it. Nothing is imported here: each module is loaded when used.
"""
