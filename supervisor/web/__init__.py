"""The status page: what a person sees and does through ``http_listen`` when
``http_auth_file`` is set (the sessions, the QR code to scan, the operator's actions).

``auth`` says who may see it, ``qr`` draws and caches the QR code, ``board`` reads the
daemon's sessions, ``app`` is the page itself (Starlette, Jinja2). Nothing here is loaded
unless the page is served.
"""
