"""The status page: what a person sees and does through ``http_listen`` when
``http_auth_file`` is set (the sessions, the QR code to scan, the operator's actions).

Nothing here is loaded unless the page is served, and no module here imports the web
stack itself at load time: ``qr`` draws and caches the QR code (segno is loaded when a
code is first drawn).
"""
