"""The alert URLs: the form of one entry, the file that may hold them, the parts never to print.

An entry is an Apprise URL, optionally behind the tags that route kinds of alerts to it,
as in Apprise's own text configuration: ``oncall,ops=tgram://TOKEN/CHAT``. The URLs hold
tokens and passwords, so they are secrets from the moment they are read: a ``SecretStr``
each, and a reason why one is refused names its scheme only (``a slack:// URL``), never a
character of the rest.

``alerts.urls_file`` names a file of entries, one per line (``#`` starts a comment line),
read as the key file is (a regular file of at most 64 KiB, never blocking); when others
than the supervisor can read it, ``exposure`` says who.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

import msgspec
from pydantic import SecretStr

from supervisor.config.files import read_regular_file, readable_by_others
from supervisor.config.origin import Origin
from supervisor.config.problems import TOKEN_LIKE

__all__ = [
    "TAG",
    "URLS_FILE_MAX_BYTES",
    "AlertUrl",
    "UrlsFile",
    "duplicates",
    "parse_entry",
    "read_urls_file",
    "secret_pieces",
    "tags_of",
]

URLS_FILE_MAX_BYTES = 64 * 1024
"""A file of alert URLs longer than this is refused, not read on."""

TAG = re.compile(r"[a-z0-9_-]{1,64}")
"""One routing tag (lower case: tags are compared case-insensitively)."""

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}")
_TAGS = re.compile(r"[A-Za-z0-9_,-]*")
_PIECE = re.compile(r"[^/?&=:@#;]+")
_TOKEN_PIECE = re.compile(r"(?=[^0-9]*[0-9])(?=.*[A-Za-z])[^.]{8,}")


class AlertUrl(NamedTuple):
    """One Apprise URL and the tags it carries; ``where`` says which entry it is
    (``alerts.urls item 2``, ``/etc/wasend/alert-urls line 3``), ``scheme`` its kind of
    service (``slack``, ``mailto``): both are safe to print, the URL is not."""

    url: SecretStr
    tags: tuple[str, ...]
    scheme: str
    where: str


def parse_entry(text: str, where: str) -> AlertUrl:
    """One entry, ``[TAGS=]scheme://...``, or ValueError with a reason (``empty``, ``a
    slack:// URL with a space...``) that never shows a character of the URL past its
    scheme."""
    text = text.strip()
    if not text:
        raise ValueError("empty")
    head, sep, rest = text.partition("://")
    tags_text, eq, scheme = head.rpartition("=") if "=" in head else ("", "", head)
    if not sep or not _SCHEME.fullmatch(scheme):
        raise ValueError("not an Apprise URL (scheme://...)")
    # A scheme that looks like a token is a token pasted in the wrong place: not shown.
    shown = "an Apprise URL" if TOKEN_LIKE.fullmatch(scheme) else f"a {scheme.lower()}:// URL"
    if eq and not _TAGS.fullmatch(tags_text):
        raise ValueError(
            f"{shown} whose tags are not letters, digits, _ and -, separated by commas"
        )
    tags = tuple(dict.fromkeys(t.lower() for t in tags_text.split(",") if t))
    if eq and (not tags or not all(TAG.fullmatch(t) for t in tags)):
        raise ValueError(f"{shown} with an empty or overlong tag before its =")
    if not rest:
        raise ValueError(f"{shown} that names nothing after its scheme://")
    if not rest.isprintable() or any(ch.isspace() for ch in rest):
        raise ValueError(f"{shown} with a space or a control character in it")
    return AlertUrl(SecretStr(f"{scheme}://{rest}"), tags, scheme.lower(), where)


def duplicates(urls: Sequence[AlertUrl]) -> list[tuple[AlertUrl, AlertUrl]]:
    """Pairs (first, again) of entries naming the same URL: each would get every alert
    twice."""
    seen: dict[str, AlertUrl] = {}
    found: list[tuple[AlertUrl, AlertUrl]] = []
    for entry in urls:
        text = entry.url.get_secret_value()
        if text in seen:
            found.append((seen[text], entry))
        else:
            seen[text] = entry
    return found


def secret_pieces(url: str) -> tuple[str, ...]:
    """What of a URL must never be printed: the URL itself, the password in it, and every
    piece of it that looks like a token (8 characters or more, letters and digits both,
    no dot): a log line may quote one alone. Apprise URLs keep tokens where a host would
    be (``slack://TOKEN_A/TOKEN_B``, ``tgram://BOT_ID:TOKEN/CHAT``); a host name has dots."""
    pieces = [url]
    parts = urlsplit(url)
    userinfo, _, _ = parts.netloc.rpartition("@")
    password = userinfo.partition(":")[2]
    for piece in (password, *_PIECE.findall(url.partition("://")[2])):
        if piece is password or _TOKEN_PIECE.fullmatch(piece):
            pieces.extend((piece, unquote(piece)))
    return tuple(p for p in dict.fromkeys(pieces) if p)


class UrlsFile(msgspec.Struct, frozen=True):
    """``alerts.urls_file`` as read at load: where it is and who named it, its URLs, and who
    else could read it then (``(mode, who)``, or None)."""

    path: Path
    origin: Origin
    urls: tuple[AlertUrl, ...]
    exposure: tuple[int, str] | None = None

    def __repr__(self) -> str:
        return f"UrlsFile({str(self.path)!r}, {len(self.urls)} URLs)"


def read_urls_file(path: Path) -> tuple[list[tuple[int, str]], tuple[int, str] | None]:
    """The entries of a file of alert URLs, by line number (blank lines and ``#`` comment
    lines skipped), and who else may read it (``(mode, who)`` or None). Raises OSError or
    UnicodeDecodeError; never blocks (``read_regular_file``)."""
    data, info = read_regular_file(path, URLS_FILE_MAX_BYTES, "a file of alert URLs")
    lines = [
        (number, line.strip())
        for number, line in enumerate(data.decode("utf-8").splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    who = readable_by_others(info)
    return lines, None if who is None else (stat.S_IMODE(info.st_mode), who)


def tags_of(urls: Iterable[AlertUrl]) -> set[str]:
    """Every tag some URL carries."""
    return {tag for entry in urls for tag in entry.tags}
