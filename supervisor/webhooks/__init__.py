"""The provider's webhooks, as hints: what a request says (``envelope``), whether to
believe it came from the provider (``signature``), and the re-reads it asks for
(``nudges``); ``receiver`` puts them together for the listener. A webhook is never the
truth: it only has the supervisor read that one session from the API at once."""
