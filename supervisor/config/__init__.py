"""The configuration: the settings model, its sources, the API key, and one-line problem
messages.

``model`` (``Settings``, its tables, ``setting_keys``), ``sources`` (pydantic-settings'
sources, each keeping where its values came from), ``load`` (``load_settings``), ``key``
(``ApiKeySource``), ``urls`` (an alert URL entry, the file of them, their secret pieces),
``problems`` (``ConfigError``, problem lines, excerpts), ``render`` (``render_settings``),
``origin`` (where a value came from), ``files`` (reading a file of bounded size without
blocking). Nothing is imported here: ``check`` loads only what it uses.
"""
