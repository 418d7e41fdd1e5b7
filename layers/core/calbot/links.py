"""Meeting-link detection and normalisation for Microsoft Graph and Google Calendar events.

Lookup order: structured conference data, then location fields, then the body/description.
Every candidate URL is unwrapped (Outlook SafeLinks, google.com/url redirects), trimmed and then
classified by its real host and path, so marketing pages and look-alike hosts never match.
Standard library only; all regexes are compiled at import so the module stays cheap to load.
"""

import html
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import SplitResult, parse_qs, urlsplit, urlunsplit

__all__ = [
    "MeetingLink",
    "Platform",
    "find_in_text",
    "find_meeting_link",
    "from_google_event",
    "from_graph_event",
    "match_url",
    "unwrap_url",
]

Platform = Literal["google_meet", "zoom", "teams", "webex", "gotomeeting", "bluejeans", "whereby"]


@dataclass(frozen=True)
class MeetingLink:
    url: str  # normalised: https scheme, unwrapped, entities decoded, trailing punctuation trimmed
    platform: Platform


# --- text scanning -----------------------------------------------------------------------------

# Characters that never belong to a link we care about: whitespace (incl. the NBSP that `&nbsp;`
# decodes to), zero-width characters, quotes, angle brackets and the brackets/pipes that wrap links
# in Markdown-ish text. A backslash is excluded too: browsers treat it as "/" while urlsplit does not.
_URL_CHARS = r"[^\s<>\"'`\[\]{}|\\^\u200b-\u200d\u2060\ufeff]"

_CANDIDATE_RE = re.compile(
    rf"""
    # Non-web URIs are consumed whole so that a URL inside them (mailto:?body=https://...) is skipped.
    (?P<other>\b(?:mailto|tel|callto|sip|sips|sms|fax):{_URL_CHARS}*)
    | (?P<url>https?://{_URL_CHARS}+)
    # Scheme-less "zoom.us/j/1": must start a token (not an e-mail domain, not inside another URL)
    # and must have a path, because a bare host is never a meeting link.
    | (?<![\w@.\-/%=&?\#])(?:[a-z0-9-]+\.)+[a-z]{{2,}}(?::\d{{1,5}})?/{_URL_CHARS}*
    """,
    re.IGNORECASE | re.VERBOSE,
)

# Comments, <style> and <script> hold no visible links but can hold URL-looking text (CSS url()).
_HIDDEN_START_RE = re.compile(r"<!--|<(script|style)\b", re.IGNORECASE)
_HIDDEN_END_RE = {
    "": re.compile(r"-->"),
    "script": re.compile(r"</script\s*>", re.IGNORECASE),
    "style": re.compile(r"</style\s*>", re.IGNORECASE),
}
# A tag name must be followed by whitespace, "/>" or ">", so Outlook's plain-text "<https://...>"
# is not mistaken for a tag. Quoted values stop at "<" to keep matching linear on broken markup.
_TAG_RE = re.compile(r"</?[a-zA-Z][\w:-]*(?:\s(?:\"[^\"<]*\"|'[^'<]*'|[^'\"<>])*)?/?>")
_HREF_RE = re.compile(r"""\shref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""", re.IGNORECASE)
# Only `;`-terminated references are decoded: html.unescape alone would turn "&region=" into "®ion=".
_ENTITY_RE = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")

_LEADING_JUNK = "<([{\"'"
_TRAILING_JUNK = ".,;:!?)]}>'\"\u00a0\u200b\u200c\u200d\u2060\ufeff"

# --- URL parsing -------------------------------------------------------------------------------

# "zoom.us:443/j/1" has no scheme even though it looks like "scheme:..." - a digit follows the colon.
_SCHEME_RE = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*):(?![0-9])")
_HAS_SPACE_RE = re.compile(r"\s")
_MAX_UNWRAP = 8  # guards against redirect loops; real links are wrapped at most two or three times

_SAFELINKS_SUFFIXES = (".safelinks.protection.outlook.com", ".safelinks.protection.office365.us")
_GOOGLE_REDIRECT_HOSTS = frozenset({"www.google.com", "google.com"})

# --- platform rules ----------------------------------------------------------------------------

_MEET_PATH_RE = re.compile(r"/[a-z]{3}-[a-z]{4}-[a-z]{3}/?|/lookup/[A-Za-z0-9._-]+/?")
_ZOOM_PATH_RE = re.compile(r"/[jws]/[0-9]+/?|/my/[A-Za-z0-9._-]+/?|/wc/join/[0-9]+/?|/wc/[0-9]+/join/?")
_TEAMS_HOSTS = frozenset(
    {"teams.microsoft.com", "teams.live.com", "gov.teams.microsoft.us", "dod.teams.microsoft.us"}
)
_TEAMS_PATH_RE = re.compile(r"/l/meetup-join/.+|/meet/[0-9]+/?")
_WEBEX_EXCLUDED_HOSTS = frozenset({"www.webex.com"})  # marketing site
_WEBEX_JPHP_RE = re.compile(r"/[A-Za-z0-9._-]+/j\.php")
_WEBEX_PATH_RE = re.compile(r"/(?:meet|join)/[A-Za-z0-9._@-]+/?|/wbxmjs/joinservice/.+")
_GOTO_JOIN_PATH_RE = re.compile(r"/join/[0-9]+/?")
_GOTO_APP_PATHS = frozenset({"", "/", "/index.html"})
_NAME_PATH_RE = re.compile(r"/[A-Za-z0-9][A-Za-z0-9._-]*/?")
_DIGITS_RE = re.compile(r"[0-9]+")
_BLUEJEANS_PATH_RE = re.compile(r"/[0-9]+(?:/[A-Za-z0-9._-]+)*/?")
_WHEREBY_EXCLUDED_HOSTS = frozenset({"docs.whereby.com", "help.whereby.com", "blog.whereby.com"})
# Single-segment pages of whereby's own site; everything else with one segment is a room name.
_WHEREBY_RESERVED = frozenset(
    {
        "about",
        "api",
        "blog",
        "business",
        "careers",
        "contact",
        "dashboard",
        "developers",
        "download",
        "embedded",
        "enterprise",
        "features",
        "help",
        "information",
        "legal",
        "login",
        "org",
        "pricing",
        "privacy",
        "product",
        "security",
        "signup",
        "support",
        "terms",
        "user",
    }
)


def _is_host(host: str, domain: str) -> bool:
    return host == domain or host.endswith("." + domain)


def _classify(host: str, path: str, query: str) -> Platform | None:
    """Platform for an already-unwrapped URL, by exact host and join-path shape."""
    if host == "meet.google.com":
        return "google_meet" if _MEET_PATH_RE.fullmatch(path) else None
    if _is_host(host, "zoom.us") or _is_host(host, "zoomgov.com"):
        return "zoom" if _ZOOM_PATH_RE.fullmatch(path) else None
    if host in _TEAMS_HOSTS:
        return "teams" if _TEAMS_PATH_RE.fullmatch(path) else None
    if host.endswith(".webex.com") and host not in _WEBEX_EXCLUDED_HOSTS:
        if _WEBEX_JPHP_RE.fullmatch(path):
            return "webex" if query else None  # j.php without parameters is the site's landing page
        return "webex" if _WEBEX_PATH_RE.fullmatch(path) else None
    if host == "app.gotomeeting.com":
        meeting_ids = parse_qs(query).get("meetingId", [])
        ok = path in _GOTO_APP_PATHS and bool(meeting_ids) and bool(_DIGITS_RE.fullmatch(meeting_ids[0]))
        return "gotomeeting" if ok else None
    if _is_host(host, "gotomeeting.com"):
        return "gotomeeting" if _GOTO_JOIN_PATH_RE.fullmatch(path) else None
    if host in ("meet.goto.com", "gotomeet.me", "www.gotomeet.me"):
        return "gotomeeting" if _NAME_PATH_RE.fullmatch(path) else None
    if _is_host(host, "bluejeans.com"):
        return "bluejeans" if _BLUEJEANS_PATH_RE.fullmatch(path) else None
    if _is_host(host, "whereby.com") and host not in _WHEREBY_EXCLUDED_HOSTS:
        if _NAME_PATH_RE.fullmatch(path) and path.strip("/").lower() not in _WHEREBY_RESERVED:
            return "whereby"
        return None
    return None


def _decode_entities(text: str) -> str:
    return _ENTITY_RE.sub(lambda m: html.unescape(m.group(0)), text)


def _clean(url: str) -> str:
    """Strip surrounding whitespace, `<...>` wrappers and trailing sentence punctuation."""
    return url.strip().lstrip(_LEADING_JUNK).rstrip(_TRAILING_JUNK).strip().rstrip(_TRAILING_JUNK)


def _absolute(url: str) -> str | None:
    """`url` with an explicit http(s) scheme, or None if it uses another scheme (tel:, mailto:)."""
    if url.startswith("//"):
        return "https:" + url
    scheme = _SCHEME_RE.match(url)
    if scheme is None:
        return "https://" + url
    return url if scheme.group(1).lower() in ("http", "https") else None


def _split(url: str) -> tuple[SplitResult, str, int | None] | None:
    """(parts, lowercase host, port) of a web URL, or None if it is not one we can trust."""
    absolute = _absolute(url)
    if absolute is None or "\\" in absolute:
        return None
    try:
        parts = urlsplit(absolute)
        port = parts.port  # raises on a malformed port
    except ValueError:
        return None
    host = (parts.hostname or "").rstrip(".")
    if not host:
        return None
    return parts, host, port


def _unwrap_once(url: str) -> str | None:
    split = _split(url)
    if split is None:
        return None
    parts, host, _ = split
    if host.endswith(_SAFELINKS_SUFFIXES):
        keys: tuple[str, ...] = ("url",)
    elif host in _GOOGLE_REDIRECT_HOSTS and parts.path == "/url":
        keys = ("q", "url")
    else:
        return None
    params = parse_qs(parts.query)
    for key in keys:
        values = params.get(key)
        if values and values[0].strip():
            return values[0]
    return None


def unwrap_url(url: str) -> str:
    """Remove Outlook SafeLinks and google.com/url redirect wrappers, however deeply nested.

    Returns the input (stripped) unchanged when it is not a recognised redirect.
    """
    if not isinstance(url, str):
        return url
    current = url.strip()
    for _ in range(_MAX_UNWRAP):
        inner = _unwrap_once(current)
        if inner is None:
            break
        current = inner.strip()
    return current


def match_url(url: str) -> MeetingLink | None:
    """Classify one candidate URL; returns the normalised link or None if it is not a meeting link."""
    if not isinstance(url, str):
        return None
    # Decoding here too keeps structured values and text-scanned candidates normalised the same way.
    candidate = _clean(unwrap_url(_clean(_decode_entities(url))))
    if not candidate or _HAS_SPACE_RE.search(candidate):
        return None
    split = _split(candidate)
    if split is None:
        return None
    parts, host, port = split
    platform = _classify(host, parts.path, parts.query)
    if platform is None:
        return None
    # Userinfo is dropped and default ports folded away so equal links compare equal.
    netloc = host if port in (None, 80, 443) else f"{host}:{port}"
    return MeetingLink(urlunsplit(("https", netloc, parts.path, parts.query, parts.fragment)), platform)


def _drop_hidden(text: str) -> str:
    """Remove comments, <style> and <script> blocks (linear even on unterminated markup)."""
    out: list[str] = []
    pos = 0
    while (start := _HIDDEN_START_RE.search(text, pos)) is not None:
        out.append(text[pos : start.start()])
        end = _HIDDEN_END_RE[(start.group(1) or "").lower()].search(text, start.end())
        if end is None:  # unterminated block: a browser hides the rest of the document too
            return " ".join(out)
        out.append(" ")
        pos = end.end()
    out.append(text[pos:])
    return "".join(out)


def _tag_to_text(tag: re.Match[str]) -> str:
    # The href is emitted where the tag stood, so links keep their document order with the text.
    href = _HREF_RE.search(tag.group(0))
    if href is None:
        return " "
    return f" {href.group(1) or href.group(2) or href.group(3) or ''} "


def _candidates(text: str) -> Iterator[str]:
    plain = _decode_entities(_TAG_RE.sub(_tag_to_text, _drop_hidden(text)))
    for found in _CANDIDATE_RE.finditer(plain):
        if found.group("other") is None:
            yield found.group(0)


def find_in_text(text: str | None) -> MeetingLink | None:
    """First meeting link in plain text or HTML (href values included), in document order."""
    if not text or not isinstance(text, str):
        return None
    for candidate in _candidates(text):
        link = match_url(candidate)
        if link is not None:
            return link
    return None


def find_meeting_link(
    *,
    structured: Iterable[str | None] = (),
    location: Iterable[str | None] = (),
    body: str | None = None,
) -> MeetingLink | None:
    """Structured conference URLs first, then location strings, then the body."""
    for value in structured:
        if isinstance(value, str) and value:
            # Structured fields normally hold a bare URL; fall back to scanning in case they do not.
            link = match_url(value) or find_in_text(value)
            if link is not None:
                return link
    for value in location:
        link = find_in_text(value)
        if link is not None:
            return link
    return find_in_text(body)


def _get(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _text(obj: Any, *keys: str) -> str | None:
    value = _get(obj, *keys)
    return value if isinstance(value, str) else None


def from_graph_event(event: Mapping[str, Any]) -> MeetingLink | None:
    """Meeting link of a raw Microsoft Graph event resource."""
    if not isinstance(event, Mapping):
        return None
    structured = [_text(event, "onlineMeeting", "joinUrl"), _text(event, "onlineMeetingUrl")]
    location = [_text(event, "location", "displayName"), _text(event, "location", "locationUri")]
    locations = event.get("locations")
    if isinstance(locations, list):
        for item in locations:
            location += [_text(item, "displayName"), _text(item, "locationUri")]
    body = _text(event, "body", "content")
    if not body or not body.strip():
        # bodyPreview is a plain-text prefix of the body, so it only helps when the body is missing.
        body = _text(event, "bodyPreview")
    return find_meeting_link(structured=structured, location=location, body=body)


def from_google_event(event: Mapping[str, Any]) -> MeetingLink | None:
    """Meeting link of a raw Google Calendar event resource."""
    if not isinstance(event, Mapping):
        return None
    structured: list[str | None] = []
    entry_points = _get(event, "conferenceData", "entryPoints")
    if isinstance(entry_points, list):
        # Only "video" entry points are joinable; "phone"/"sip"/"more" are dial-ins and help pages.
        for entry in entry_points:
            if _get(entry, "entryPointType") == "video":
                structured.append(_text(entry, "uri"))
    structured.append(_text(event, "hangoutLink"))
    return find_meeting_link(
        structured=structured,
        location=[_text(event, "location")],
        body=_text(event, "description"),
    )
