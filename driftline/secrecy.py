"""Secret values (and the files settings name): read from settings or files, collected for redaction,
kept out of every log line.

Secrets are `pydantic.SecretStr` in the settings (so ``repr``, ``model_dump`` and ``driftline config show``
print ``**********``) or ``*_file`` paths to files holding them (a mounted Kubernetes secret). `resolve`
turns either into the value at the moment a client needs it; `RedactingFilter` replaces every known
secret value in log records, as a second line of defence behind never formatting them in the first place.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from driftline.errors import ConfigError

MASK = "**********"
_MIN_REDACTED = 4  # shorter values would redact ordinary words; such secrets are rejected by `resolve`


def require_file(path: str, setting: str) -> str:
    """``path`` if it names an existing file (a certificate, key or CA a setting points at); ConfigError naming
    the setting otherwise."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{setting}: file {path!r} does not exist")
    if not p.is_file():
        raise ConfigError(f"{setting}: {path!r} is not a file")
    return str(p)


def read_secret_file(path: str, setting: str) -> str:
    """The secret in ``path`` (one trailing newline stripped). Errors name the setting, never the content."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{setting}: file {path!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{setting}: {path!r} is a directory, not a file holding the secret") from None
    except PermissionError:
        raise ConfigError(f"{setting}: file {path!r} is not readable by this user") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{setting}: file {path!r} is not UTF-8 text") from None
    value = text[:-1] if text.endswith("\n") else text
    value = value[:-1] if value.endswith("\r") else value
    if not value:
        raise ConfigError(f"{setting}: file {path!r} is empty")
    return value


def resolve(value: SecretStr | None, file: str | None, setting: str) -> str | None:
    """The secret from the setting itself or from ``<setting>_file``; None when neither is set."""
    if value is not None:
        secret = value.get_secret_value()
        if not secret:
            raise ConfigError(f"{setting}: is empty")
    elif file is not None:
        secret = read_secret_file(file, f"{setting}_file")
    else:
        return None
    REDACTOR.add(secret)
    return secret


def secret_values(model: BaseModel, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted setting, value) of every secret in ``model``: SecretStr fields and ``*_file`` secrets whose
    sibling field is a SecretStr. Unreadable files are skipped (the client that needs them reports it)."""
    fields = type(model).model_fields
    for name in fields:
        value: Any = getattr(model, name)
        where = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            yield from secret_values(value, f"{where}.")
        elif isinstance(value, SecretStr):
            yield where, value.get_secret_value()
        elif isinstance(value, dict):  # e.g. kafka.client_properties: secret-looking names hold SecretStr
            yield from ((f"{where}.{k}", v.get_secret_value()) for k, v in value.items() if isinstance(v, SecretStr))
        elif name.endswith("_file") and isinstance(value, str):
            sibling = fields.get(name[: -len("_file")])
            if sibling is not None and "SecretStr" in str(sibling.annotation):
                try:
                    yield where, read_secret_file(value, where)
                except ConfigError:
                    continue


class _Redactor:
    """The process-wide set of secret values to redact."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: tuple[str, ...] = ()

    def add(self, value: str) -> None:
        if len(value) < _MIN_REDACTED:
            return
        with self._lock:
            if value not in self._values:
                # longest first: a secret containing another is replaced whole
                self._values = tuple(sorted({*self._values, value}, key=len, reverse=True))

    def add_all(self, values: Iterable[str]) -> None:
        for v in values:
            self.add(v)

    def redact(self, text: str) -> str:
        for v in self._values:
            if v in text:
                text = text.replace(v, MASK)
        return text

    @property
    def values(self) -> tuple[str, ...]:
        return self._values


REDACTOR = _Redactor()


def register(model: BaseModel) -> None:
    """Redact every secret of ``model`` (the loaded settings) from now on."""
    REDACTOR.add_all(v for _, v in secret_values(model))


class RedactingFilter(logging.Filter):
    """Replaces secret values in a record's message and exception text (install on handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not REDACTOR.values:
            return True
        message = record.getMessage()
        redacted = REDACTOR.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = REDACTOR.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = REDACTOR.redact(record.stack_info)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add the redacting filter to every handler of ``logger`` (the root logger by default)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
