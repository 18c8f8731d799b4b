"""Configuration, loaded once and passed down.

Two sources with two jobs:

* ``newsletter.toml`` in the publication root holds the publication's public
  identity (name, From, Reply-To, base URL, colours). It belongs in git.
  Any key can be overridden by ``NEWSLETTER_<KEY>`` in the environment.
* The environment (and a ``.env`` file in the root, which never overrides the
  real environment) holds secrets and transport settings.

No other module reads ``os.environ``: they receive a :class:`Settings`.

:class:`Publication` and :class:`Settings` are NamedTuples (``_replace``, ``_fields``):
every command builds them, and a frozen dataclass costs a millisecond or two at import.
No ``from __future__ import annotations`` either: NamedTuple compiles string annotations.
"""

import math
import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple

from newsletter.addresses import ENCODED_WORD
from newsletter.errors import ConfigError, register_secrets
from newsletter.patterns import compiled, has_control_chars

if TYPE_CHECKING:
    from newsletter.events import SoftBouncePolicy

CONFIG_FILE = "newsletter.toml"
#: The per-root key dry runs and tests get when NEWSLETTER_SECRET_KEY is unset; real sends refuse it.
DEV_KEY_PREFIX = "insecure-development-key:"
#: Environment names holding secrets: scrubbed from every stored or printed error.
_SECRET_NAME = r"(KEY|TOKEN|PASSWORD|SECRET|PASS)(_ID)?$"


def is_development_key(key: str | None) -> bool:
    """True when ``key`` is missing or the development stand-in: the one check a real send makes."""
    return not key or str(key).startswith(DEV_KEY_PREFIX)


class Secret(str):
    """A string that never shows itself in reprs, logs or tracebacks."""

    def __repr__(self) -> str:
        return "Secret('***')"


class Publication(NamedTuple):
    """Public identity of the newsletter; every field is overridable by NEWSLETTER_<KEY>."""

    name: str = "My Newsletter"
    tagline: str = ""
    description: str = ""
    from_email: str = "newsletter@example.org"
    from_name: str = ""
    reply_to: str = ""
    base_url: str = ""
    postal_address: str = ""
    lang: str = "en"
    logo_url: str = ""
    logo_alt: str = ""
    list_id: str = ""
    feedback_id: str = ""
    unsubscribe_mailto: str = ""
    accent_color: str = "#9b1c1c"
    text_color: str = "#1f2328"
    background_color: str = "#f4f1ea"
    paper_color: str = "#ffffff"
    muted_color: str = "#57606a"

    @property
    def sender_domain(self) -> str:
        return self.from_email.rpartition("@")[2].lower()

    @property
    def list_id_header(self) -> str:
        """RFC 2919 List-Id: a phrase (quoted where needed) plus a dotted id under a domain
        the publisher controls."""
        from email.utils import formataddr

        ident = self.list_id or f"newsletter.{self.sender_domain}"
        return formataddr((self.name, ident))

    @property
    def reply_to_address(self) -> str:
        return self.reply_to or self.from_email

    @property
    def unsubscribe_address(self) -> str:
        return self.unsubscribe_mailto or self.reply_to_address


# Environment names that differ from NEWSLETTER_<FIELD> because the shorter name is the convention.
_ENV_ALIASES = {"from_email": ("NEWSLETTER_FROM", "NEWSLETTER_FROM_EMAIL")}


def _env_names(name: str) -> tuple[str, ...]:
    return _ENV_ALIASES.get(name, (f"NEWSLETTER_{name.upper()}",))


class Settings(NamedTuple):
    """Everything a command needs, resolved from the root, newsletter.toml and the environment."""

    root: Path
    publication: Publication
    env: Mapping[str, str]  # secrets among them: left out of the repr

    def __repr__(self) -> str:
        return f"Settings(root={self.root!r}, publication={self.publication!r})"

    # ---- paths -------------------------------------------------------------------
    @property
    def issues_dir(self) -> Path:
        return self.root / "issues"

    @property
    def templates_dir(self) -> Path:
        return self.root / "templates"

    @property
    def build_dir(self) -> Path:
        return self.path("NEWSLETTER_BUILD_DIR", "build")

    @property
    def outbox(self) -> Path:
        return self.path("NEWSLETTER_OUTBOX", "outbox")

    @property
    def db_target(self) -> "Path | str":
        """The database: a ``postgresql://`` URL as given (its password stays in it: never print
        it, see :func:`newsletter.dburl.redact`), else the SQLite file as :attr:`db_path` checks it."""
        from newsletter.dburl import is_postgres

        value = self.get("NEWSLETTER_DB", "newsletter.db")
        return value.strip() if is_postgres(value) else self.db_path

    @property
    def db_path(self) -> Path:
        """The SQLite file. Its folder must exist: a typo must not create folders and an empty list.
        A command that runs on SQLite only says so when NEWSLETTER_DB is a PostgreSQL URL."""
        from newsletter.dburl import is_postgres, redact

        if is_postgres(self.get("NEWSLETTER_DB")):
            raise ConfigError(f"NEWSLETTER_DB={redact(self.get('NEWSLETTER_DB'))!r} is PostgreSQL; this command "
                              "runs on SQLite only so far (see `newsletter db status` for what does)")
        path = self.path("NEWSLETTER_DB", "newsletter.db")
        if not path.parent.is_dir():
            raise ConfigError(f"NEWSLETTER_DB={self.get('NEWSLETTER_DB', 'newsletter.db')!r}: the folder "
                              f"{path.parent} does not exist; create it or fix the path")
        return path

    def path(self, key: str, default: str) -> Path:
        p = Path(self.get(key, default))
        return p if p.is_absolute() else self.root / p

    # ---- typed accessors ---------------------------------------------------------
    def get(self, key: str, default: str = "") -> str:
        value = self.env.get(key, "")
        return value if value != "" else default

    def secret(self, key: str) -> Secret | None:
        value = self.env.get(key, "")
        return Secret(value) if value else None

    def require(self, key: str, why: str) -> str:
        value = self.env.get(key, "")
        if not value:
            raise ConfigError(f"{key} is not set; it is needed {why} (see .env.example)")
        return value

    def number(self, key: str, default: float | None, *, minimum: float = 0) -> float | None:
        raw = self.env.get(key, "")
        if raw == "":
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{key}={raw!r} is not a number") from None
        if not math.isfinite(value) or value > 1e9:
            raise ConfigError(f"{key}={raw!r} is not a usable number")
        if value < minimum:
            raise ConfigError(f"{key}={raw!r} must be at least {minimum:g}")
        return value

    def flag(self, key: str, default: bool = False) -> bool:
        """An on/off setting (1/true/yes/on or 0/false/no/off, unset = ``default``); anything else is
        refused rather than guessed, since some of these settings switch a safety check off."""
        raw = self.env.get(key, "").strip().lower()
        if not raw:
            return default
        if raw in ("0", "false", "no", "off"):
            return False
        if raw in ("1", "true", "yes", "on"):
            return True
        raise ConfigError(f"{key}={raw[:20]!r} is not on or off (1 or 0)")

    def integer(self, key: str, default: int, *, minimum: int = 0) -> int:
        value = self.number(key, default, minimum=minimum)
        assert value is not None
        if value != int(value):
            raise ConfigError(f"{key} must be a whole number")
        return int(value)

    @property
    def trusted_proxies(self) -> int | tuple[Any, ...]:
        """``NEWSLETTER_TRUSTED_PROXIES``: how many proxies (a count), or which (addresses/networks,
        comma-separated), may set ``X-Forwarded-For``. Unset: 0, the header is never trusted."""
        import ipaddress

        raw = self.get("NEWSLETTER_TRUSTED_PROXIES").strip()
        if raw.isdigit():
            return self.integer("NEWSLETTER_TRUSTED_PROXIES", 0)
        nets = []
        for item in filter(None, (p.strip() for p in raw.split(","))):
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ConfigError(f"NEWSLETTER_TRUSTED_PROXIES: {item[:60]!r} is neither a count nor an "
                                  "IP address or network") from None
        return tuple(nets)

    @property
    def form_origins(self) -> tuple[str, ...]:
        """``NEWSLETTER_FORM_ORIGINS``: other sites (``https://example.org``) whose pages may post
        the signup form; the publication's own ``base_url`` origin is always allowed."""
        raw = self.get("NEWSLETTER_FORM_ORIGINS")
        return tuple(check_url("NEWSLETTER_FORM_ORIGINS", o, origin_only=True).rstrip("/").lower()
                     for o in filter(None, (p.strip() for p in raw.split(","))))

    @property
    def signup_origins(self) -> frozenset[str]:
        """Origins whose pages may post the signup form: the publication's own (``base_url``'s)
        and ``NEWSLETTER_FORM_ORIGINS``, lower case, no trailing slash."""
        return frozenset({url_origin(self.publication.base_url), *self.form_origins} - {""})

    @property
    def archive_url(self) -> str:
        """``NEWSLETTER_ARCHIVE_URL``: where the web archive is published, when not at ``base_url``
        (its pages then post the signup form only if that origin is in NEWSLETTER_FORM_ORIGINS)."""
        raw = self.get("NEWSLETTER_ARCHIVE_URL").strip()
        return check_url("NEWSLETTER_ARCHIVE_URL", raw).rstrip("/") if raw else self.publication.base_url

    @property
    def transport_name(self) -> str:
        return self.get("NEWSLETTER_TRANSPORT", "dryrun").lower()

    @property
    def secret_key(self) -> Secret:
        key = self.secret("NEWSLETTER_SECRET_KEY")
        if key is None:
            # A per-root development key keeps dry runs and tests working out of the box;
            # real sends refuse to start without a configured key (see delivery.py).
            return Secret(DEV_KEY_PREFIX + str(self.root.resolve()))
        return key

    @property
    def has_secret_key(self) -> bool:
        return not is_development_key(self.secret("NEWSLETTER_SECRET_KEY"))

    def secret_values(self) -> list[str]:
        """Every configured secret (API keys, tokens, passwords): for :func:`newsletter.errors.scrub`."""
        from newsletter.dburl import url_passwords

        named = [v for k, v in self.env.items() if v and compiled(_SECRET_NAME).search(k.upper())]
        return named + url_passwords(self.get("NEWSLETTER_DB"))  # NEWSLETTER_DB=postgresql://user:SECRET@…

    # ---- what comes back (webhooks, inbox) ------------------------------------------
    @property
    def soft_bounce_policy(self) -> "SoftBouncePolicy":
        """``NEWSLETTER_SOFT_BOUNCE_LIMIT`` soft bounces within ``NEWSLETTER_SOFT_BOUNCE_WINDOW``
        days suppress a reader (defaults 3 and 30)."""
        from datetime import timedelta

        from newsletter.events import SoftBouncePolicy

        return SoftBouncePolicy(limit=self.integer("NEWSLETTER_SOFT_BOUNCE_LIMIT", 3, minimum=1),
                                window=timedelta(days=self.integer("NEWSLETTER_SOFT_BOUNCE_WINDOW", 30, minimum=1)))

    @property
    def ses_topic_arns(self) -> frozenset[str]:
        """``SES_SNS_TOPIC_ARNS``: the SNS topics whose messages (and subscription
        confirmations) the SES webhook accepts; comma- or space-separated."""
        return frozenset(a for a in self.get("SES_SNS_TOPIC_ARNS").replace(",", " ").split() if a)


def find_root(start: Path | None = None) -> Path:
    """The publication root: ``start`` (or the cwd) itself; we do not walk upward.

    Walking upward would silently pick another publication's files; explicit is safer.
    """
    return (start or Path.cwd()).resolve()


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", path=path) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8", path=path) from None
    return data.get("publication", data)


_MAX_DOTENV_BYTES = 1024 * 1024


def _dotenv(root: Path) -> dict[str, str]:
    """The ``.env`` file's settings. It is read as UTF-8 text without control characters, or refused
    with its line: python-dotenv raised a traceback on a UTF-16 or binary file."""
    path = root / ".env"
    if not path.exists():
        return {}
    import io

    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(stream=io.StringIO(_dotenv_text(path))).items() if v is not None}


def _dotenv_text(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            raw = fh.read(_MAX_DOTENV_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", path=path) from None
    if len(raw) > _MAX_DOTENV_BYTES:
        raise ConfigError(f"larger than {_MAX_DOTENV_BYTES // 1024} KB: not a settings file", path=path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        utf16 = " (it is UTF-16)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise ConfigError(f"not UTF-8{utf16}: save it as UTF-8 text", path=path,
                          line=raw[:exc.start].count(b"\n") + 1) from None
    for number, line in enumerate(text.split("\n"), start=1):
        if has_control_chars(line.removesuffix("\r").replace("\t", " ")):
            raise ConfigError("a control character (binary data, or UTF-16 text): save it as UTF-8 text",
                              path=path, line=number)
    return text


def _split_from(values: dict[str, str], *, explicit_name: bool) -> None:
    """Accept ``from_email = "Name <addr>"``, the form every mail library takes: the display
    name becomes ``from_name`` unless NEWSLETTER_FROM_NAME says otherwise.

    Parsed by the standard library's RFC 5322 parser; anything it calls a defect (``x@y.org
    <a@b.org>``, ``Name: Sub <a@b.org>``, an unquoted comma) is refused, never guessed at."""
    value = values.get("from_email", "")
    if "<" not in value and ">" not in value:
        return
    key = _key_name("from_email")
    if has_control_chars(value):
        raise ConfigError(f"{key} contains a line break or control character")
    if "=?" in value and compiled(ENCODED_WORD).search(value):
        raise ConfigError(f"{key} contains an RFC 2047 encoded-word (=?…?=); write the name itself")
    name, address = _parse_mailbox(value)
    if address is None:
        raise ConfigError(f"from address {value[:80]!r} is not 'Name <address>' or a bare address "
                          "(NEWSLETTER_FROM); a name with , : @ or other punctuation goes in quotes: "
                          '"Name, Inc." <news@example.org>')
    values["from_email"] = address
    if name and not explicit_name:
        values["from_name"] = name


def _parse_mailbox(value: str) -> tuple[str, str | None]:
    """(display name, address) of exactly one RFC 5322 mailbox without defects, else ("", None)."""
    from email.errors import ObsoleteHeaderDefect
    from email.headerregistry import HeaderRegistry

    try:
        header = HeaderRegistry()("From", value)
        mailboxes = header.addresses
    except Exception:  # noqa: BLE001 - the parser raises IndexError on "Name <a@" (CPython 3.11)
        return "", None
    # An obsolete phrase ("Dr. Who") is still one name; anything else is a value read two ways.
    defects = [d for d in header.defects if not isinstance(d, ObsoleteHeaderDefect)]
    if defects or len(mailboxes) != 1 or len(header.groups) != 1 or header.groups[0].display_name is not None:
        return "", None
    mailbox = mailboxes[0]
    if not mailbox.username or not mailbox.domain or not value.rstrip().endswith(">"):
        return "", None
    return mailbox.display_name, mailbox.addr_spec


def load_settings(root: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Resolve settings; ``environ`` defaults to ``os.environ`` (tests pass their own)."""
    root = find_root(root)
    env = {**_dotenv(root), **(os.environ if environ is None else environ)}
    raw = _read_toml(root / CONFIG_FILE)
    known = set(Publication._fields)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}",
                          path=root / CONFIG_FILE)
    values: dict[str, str] = {}
    from_file: set[str] = set()
    for name in known:
        value = raw.get(name)
        from_file.add(name)
        for env_name in _env_names(name):
            if env.get(env_name):
                value = env[env_name]
                from_file.discard(name)
                break
        if value is not None:
            if not isinstance(value, str):
                raise ConfigError(f"setting {name!r} must be a string", path=root / CONFIG_FILE)
            values[name] = value.strip()
    if values.get("base_url"):
        values["base_url"] = values["base_url"].rstrip("/")
    _split_from(values, explicit_name=bool(env.get("NEWSLETTER_FROM_NAME")))
    for name, value in list(values.items()):
        values[name] = _validate_field(name, value, root / CONFIG_FILE if name in from_file else None)
    settings = Settings(root=root, publication=Publication(**values), env=env)
    register_secrets(settings.secret_values())
    return settings


# Header injection through configuration: these fields end up in every message's headers
# (From, Reply-To, List-Id, List-Unsubscribe, Feedback-ID) or in links, so they are checked at load.
_URL_UNSAFE = r"[\s<>\"'\\`{}|^]"
_ADDRESS_FIELDS = ("from_email", "reply_to", "unsubscribe_mailto")
_URL_FIELDS = ("base_url", "logo_url")
_HEADER_FIELDS = ("name", "from_name", "list_id", "feedback_id")


def _key_name(name: str) -> str:
    return f"{name} ({' / '.join(_env_names(name))})"


def _validate_field(name: str, value: str, path: Path | None) -> str:
    """The value (an address in its normalised form); one-line :class:`ConfigError` naming the key
    when a header-bound field is unsafe."""
    if name == "lang" and value:
        from newsletter.grammar import is_language_tag

        if not is_language_tag(value):
            raise ConfigError(f"{_key_name(name)} {value[:40]!r} is not a BCP 47 language tag like en or zh-Hans",
                              path=path)
    if not value or name not in (*_ADDRESS_FIELDS, *_URL_FIELDS, *_HEADER_FIELDS):
        return value
    if has_control_chars(value):
        raise ConfigError(f"{_key_name(name)} contains a line break or control character", path=path)
    if name in _HEADER_FIELDS and "=?" in value and compiled(ENCODED_WORD).search(value):
        raise ConfigError(f"{_key_name(name)} contains an RFC 2047 encoded-word (=?…?=), which mail clients "
                          "would decode in the header; write the text itself", path=path)
    if name in _URL_FIELDS:
        check_url(_key_name(name), value, path=path)
    elif name in _ADDRESS_FIELDS:
        return check_address(_key_name(name), value, path=path)
    return value


def url_origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL, lower case; "" for none."""
    from urllib.parse import urlsplit

    parts = urlsplit(url.strip())
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else ""


def check_url(key: str, value: str, *, path: Path | None = None, origin_only: bool = False) -> str:
    """An absolute http(s) URL with a host and nothing that could break a header or an attribute."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"{key} is not a valid URL: {value[:80]!r}", path=path) from None
    if has_control_chars(value) or compiled(_URL_UNSAFE).search(value) or not value.isascii():
        raise ConfigError(f"{key} contains characters not allowed in a URL: {value[:80]!r}", path=path)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username is not None:
        raise ConfigError(f"{key} must be an http:// or https:// URL with a host: {value[:80]!r}", path=path)
    if origin_only and (parts.path not in ("", "/") or parts.query or parts.fragment):
        raise ConfigError(f"{key} must be an origin like https://example.org: {value[:80]!r}", path=path)
    return value


def check_address(key: str, value: str, *, path: Path | None = None) -> str:
    """A plain address (no display name) in its one normalised form: see
    :func:`newsletter.addresses.validate_address`, the policy every address follows."""
    from newsletter.addresses import validate_address
    from newsletter.errors import InputError

    try:
        return validate_address(value, key)
    except InputError as exc:
        raise ConfigError(exc.message, path=path) from None
