"""The status page: who may see it (auth), the QR code it shows (qr), the page itself."""
