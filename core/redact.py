"""Secrets never written or echoed: the one redaction of URLs, secret-named values and error messages.

A key can reach synthagent inside a URL (``http://user:KEY@host/v1``, ``?api-key=KEY``, ``?key=``,
``?token=``) or as a value whose name says it is one (``api_key``, ``token``, ``password``, ``secret``). Everything
the core writes or prints passes through here first: the manifest's configuration (:func:`redact_config`),
``run.log``, error messages and infrastructure-failure records (:func:`redact_text`). The redacted form keeps
everything but the secret (``http://user:***@host/v1?api-key=***&model=x``), so a reader still sees which
server was used.

``--resume`` compares the stored (redacted) configuration with the given one in redacted form, and takes a
redacted value from what the user gives again (:func:`synthagent.core.resume.resume_config`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

__all__ = ["REDACTED", "redact_url", "redact_text", "redact_config", "is_secret_name", "has_redaction"]

#: What a secret is replaced with.
REDACTED = "***"

# names of values (config keys, ``name=value`` in text) that hold a secret: the last word is one of these, or the
# name holds ``api_key``/``access_key``/``secret_key``; ``api_key_env`` names an environment variable, not a secret
_SECRET_WORDS = frozenset({"token", "secret", "password", "passwd", "apikey", "credential", "credentials"})
_SECRET_PARTS = ("api_key", "access_key", "secret_key", "private_key", "auth_token", "access_token")
# query parameters are read more widely (``?key=``, ``?sig=``, ``?code=`` are secrets in a URL)
_QUERY_WORDS = _SECRET_WORDS | {"key", "sig", "signature", "code", "auth", "pwd", "pass", "token"}
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>`]+")
_NAMED = re.compile(r"(?i)(?<![\w-])([\w.-]*(?:api[-_]?key|apikey|access[-_]?key|secret|token|passw(?:or)?d)[\w.-]*)"
                    r"(\s*[=:]\s*)(['\"]?)([^\s'\",;&)\]}]+)")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")


def is_secret_name(name: str, *, query: bool = False) -> bool:
    """True when a value named ``name`` holds a secret: ``api_key``, ``llm.api_key``, ``token``, ``password``,
    ``client_secret`` (not ``api_key_env``, ``max_tokens``, ``key``); with ``query`` (a URL's query parameter)
    also ``key``, ``api-key``, ``sig``, ``code``, ``auth``."""
    lowered = name.lower().replace("-", "_")
    words = [w for w in re.split(r"[_.\s]+", lowered) if w]
    if not words or words[-1] in ("env", "path", "file", "name"):
        return False
    if any(part in lowered for part in _SECRET_PARTS):
        return True
    return words[-1] in (_QUERY_WORDS if query else _SECRET_WORDS)


def redact_url(url: str) -> str:
    """``url`` without its secrets: the userinfo's password (or a lone user name, often a token) and the values
    of secret-named query parameters are ``***``; anything else, and a string that is not a URL, unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}:{REDACTED}@{host}" if sep else f"{REDACTED}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(is_secret_name(k, query=True) for k, _ in pairs):
            query = "&".join(f"{quote(k, safe='-_.~')}=" + (REDACTED if is_secret_name(k, query=True)
                                                             else quote(v, safe="-_.~/:")) for k, v in pairs)
    fragment = parts.fragment
    if fragment and "=" in fragment and any(is_secret_name(k, query=True) for k, _ in parse_qsl(fragment)):
        fragment = REDACTED
    if netloc == parts.netloc and query == parts.query and fragment == parts.fragment:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def redact_text(text: str) -> str:
    """``text`` (an error message, a log line) with the secrets of every URL in it, ``NAME=VALUE`` pairs whose
    name says secret (``llm.api_key=KEY``, ``token: KEY``) and ``Bearer`` credentials replaced by ``***``."""
    if not text:
        return text
    out = _URL.sub(lambda m: redact_url(m.group(0)), text)
    out = _NAMED.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}{REDACTED}" if is_secret_name(m.group(1))
                     else m.group(0), out)
    return _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", out)


def redact_config(data: Any, name: str = "") -> Any:
    """A copy of plain configuration data with every secret redacted: a string value under a secret name is
    ``***``; a URL anywhere has its secrets redacted (:func:`redact_url`)."""
    if isinstance(data, Mapping):
        return {k: redact_config(v, str(k)) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_config(v, name) for v in data]
    if isinstance(data, str):
        if name and is_secret_name(name) and data:
            return REDACTED
        return redact_url(data) if "://" in data else data
    return data


def has_redaction(value: Any) -> bool:
    """True when ``value`` (plain data) holds a redacted secret."""
    if isinstance(value, Mapping):
        return any(has_redaction(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(has_redaction(v) for v in value)
    return isinstance(value, str) and REDACTED in value
