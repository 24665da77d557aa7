"""What of a service's answer an error may quote: credentials blanked out, bodies cut short.

A service or a gateway may quote a request back (an ``Authorization: Bearer ...`` header in an error page, the
client secret in an OAuth ``error_description``): nothing the provider raises may carry it on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

#: Characters of an unreadable body quoted in an error message.
EXCERPT_CHARS = 200
#: A bearer credential quoted back in an answer (a gateway echoing the request): blanked in every quote.
_BEARER = re.compile(r"(?i)(bearer\s+)[\x21-\x7e]+")


def _forms(secret: str) -> set[str]:
    """The ways a secret can be written in an answer: as is, URL-encoded, or escaped inside a JSON string."""
    escaped = json.dumps(secret)[1:-1]
    return {secret, quote_plus(secret), quote(secret, safe=""), escaped, escaped.replace("/", "\\/")}


def scrub(text: str, hide: Iterable[str] = ()) -> str:
    """``text`` with any bearer credential and each of ``hide`` (in any of its :func:`_forms`) blanked out."""
    text = _BEARER.sub(r"\1***", text)
    for secret in hide:
        for form in _forms(secret) if secret else ():
            text = text.replace(form, "***")
    return text


def scrub_value(value: Any, hide: Iterable[str]) -> Any:
    """A decoded JSON value with every string in it scrubbed."""
    if isinstance(value, str):
        return scrub(value, hide)
    if isinstance(value, Mapping):
        return {str(k): scrub_value(v, hide) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_value(v, hide) for v in value]
    return value


def excerpt(body: bytes, hide: Iterable[str] = ()) -> str:
    """A short, single-line quote of a body for an error message, with any secret blanked out."""
    hide = [secret for secret in hide if secret]
    # A secret cut where the quote ends would be matched by none of its forms: read past the end by the longest
    # form, blank, then drop that overhang again.
    overhang = max((len(form.encode()) for secret in hide for form in _forms(secret)), default=0)
    shown = EXCERPT_CHARS * 4
    text = scrub(body[: shown + overhang].decode("utf-8", errors="replace"), hide)
    if overhang and len(body) > shown + overhang:
        text = text[:-overhang]
    text = " ".join(text.split())
    return text[:EXCERPT_CHARS] + ("..." if len(text) > EXCERPT_CHARS else "") if text else "(empty body)"
