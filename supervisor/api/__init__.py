"""The WASend API: the exception tree, the httpx client (the one place HTTP answers and
transport errors become those exceptions) and the rate gate."""
