"""What the ``ambry`` blob commands tell the user: one-line errors and exit codes, sizes and
times as people read them, and a blob's properties as JSON.

Owns the exit codes (:data:`EXIT_CODES_HELP` is every command's epilog), the mapping of SDK
(and OS) errors to :class:`Failure` (one line, ``ambry: error: <what>``, and its code), running
a command's coroutine so that a failure or Ctrl-C ends in that line and code, and the
formatting shared by the commands. Does not own parsing arguments (``args``) or any transfer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from ambry.common.location import SCHEME

if TYPE_CHECKING:
    from ambry.client import BlobInfo

__all__ = [
    "EXIT_CODES_HELP", "EXIT_CONFLICT", "EXIT_INTERRUPTED", "EXIT_NOT_FOUND", "EXIT_OK",
    "EXIT_OTHER", "EXIT_UNAVAILABLE", "EXIT_USAGE", "Command", "Failure", "fail", "failure_of",
    "human_size", "info_json", "iso_time", "report_failures", "run", "unknown_container",
    "usage_error",
]

T = TypeVar("T")

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_NOT_FOUND = 2
EXIT_CONFLICT = 3
EXIT_UNAVAILABLE = 4
EXIT_OTHER = 5
EXIT_INTERRUPTED = 130

#: The epilog of every command (``\b`` keeps click from re-wrapping the lines).
EXIT_CODES_HELP = """\b
Exit codes: 0 ok, 1 usage error (bad arguments, invalid blob id), 2 not found
(blob, name or container; deleted or expired), 3 conflict (name exists), 4 unavailable
(no frontend answered, or too few replicas, after retries), 5 any other error.
Frontends: --endpoint URL (repeat for failover) or $AMBRY_ENDPOINT (comma-separated),
else http://127.0.0.1:1174."""


# ------------------------------------------------------------------ errors and exit codes
class Failure(Exception):
    """A failure to report as ``ambry: error: <message>`` with ``exit_code``."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = " ".join(message.split())


def _server_text(e: Any) -> str:
    """The frontend's own words of an SDK error (its message without the "what: " prefix)."""
    message: str = getattr(e, "message", str(e))
    return message.split(": ", 1)[-1] if ": " in message else message


def unknown_container(e: BaseException) -> bool:
    from ambry.client import InvalidArgument

    # 400 INVALID_ARGUMENT is also the code of other bad input: the text tells them apart
    return isinstance(e, InvalidArgument) and ("unknown account" in e.message
                                               or "unknown container" in e.message)


def failure_of(e: BaseException, what: str) -> Failure:
    """The :class:`Failure` to report for an error of the SDK (or the OS) about ``what``
    (a blob id, a name, a path)."""
    from ambry.client import (
        ApiError,
        BadRequest,
        BlobDeleted,
        BlobExpired,
        BlobNotFound,
        Conflict,
        Forbidden,
        Gone,
        IntegrityError,
        InvalidBlobId,
        NameExists,
        PayloadTooLarge,
        RangeNotSatisfiable,
        Unauthorized,
        Unavailable,
    )

    kind = "name" if what.startswith(SCHEME) else "blob"
    if isinstance(e, Failure):
        return e
    if isinstance(e, BlobNotFound):
        return Failure(EXIT_NOT_FOUND, f"{kind} not found: {what}")
    if isinstance(e, BlobDeleted):
        return Failure(EXIT_NOT_FOUND, f"{kind} deleted: {what}")
    if isinstance(e, BlobExpired):
        return Failure(EXIT_NOT_FOUND, f"{kind} expired: {what}")
    if isinstance(e, Gone):
        return Failure(EXIT_NOT_FOUND, f"{kind} gone: {what}")
    if unknown_container(e):
        return Failure(EXIT_NOT_FOUND, _server_text(e))
    if isinstance(e, NameExists):
        return Failure(EXIT_CONFLICT, f"name exists: {what} (--force overwrites it)")
    if isinstance(e, Conflict):
        return Failure(EXIT_CONFLICT, f"conflict: {what}: {_server_text(e)}")
    if isinstance(e, Unavailable):
        return Failure(EXIT_UNAVAILABLE, f"unavailable: {e.message}")
    if isinstance(e, InvalidBlobId):
        return Failure(EXIT_USAGE, f"invalid blob id: {what}")
    if isinstance(e, PayloadTooLarge | RangeNotSatisfiable):
        return Failure(EXIT_OTHER, f"{_server_text(e)}: {what}")
    if isinstance(e, BadRequest):
        return Failure(EXIT_USAGE, f"bad request: {what}: {_server_text(e)}")
    if isinstance(e, Forbidden | Unauthorized):
        return Failure(EXIT_OTHER, f"access denied: {what}: {_server_text(e)}")
    if isinstance(e, IntegrityError):
        return Failure(EXIT_OTHER, f"integrity check failed: {e.message}")
    if isinstance(e, ApiError):
        return Failure(EXIT_OTHER, f"{what}: {e}")
    if isinstance(e, OSError):
        where = e.filename if e.filename is not None else what
        return Failure(EXIT_OTHER, f"{e.strerror or e}: {where}")
    if isinstance(e, ValueError):
        return Failure(EXIT_USAGE, str(e))
    return Failure(EXIT_OTHER, f"{what}: {type(e).__name__}: {e}")


def fail(f: Failure) -> NoReturn:
    click.echo(f"ambry: error: {f.message}", err=True)
    raise click.exceptions.Exit(f.exit_code)


class Command(click.Command):
    """A command whose usage errors exit 1 (click's own default, 2, means "not found" here)."""

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as e:
            e.exit_code = EXIT_USAGE  # type: ignore[misc]  # click declares it per class
            raise


def usage_error(message: str) -> click.UsageError:
    e = click.UsageError(message)
    e.exit_code = EXIT_USAGE  # type: ignore[misc]  # click declares it per class
    return e


def run(coro: Awaitable[T]) -> T:
    """Run a command's coroutine; report a failure as one line and its exit code."""
    async def main() -> T:
        return await coro

    try:
        return asyncio.run(main())
    except Failure as f:
        fail(f)
    except KeyboardInterrupt:
        click.echo("ambry: interrupted", err=True)
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def iso_time(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def info_json(info: BlobInfo, name: str | None = None) -> dict[str, Any]:
    return {
        "blob_id": info.blob_id, "name": name, "size": info.size,
        "content_type": info.content_type, "created": iso_time(info.created),
        "ttl_s": info.ttl_s, "expires": iso_time(info.expires) if info.expires else None,
        "service_id": info.service_id, "owner_id": info.owner_id, "filename": info.filename,
        "account": info.account, "container": info.container,
        "user_metadata": dict(info.user_metadata), "content_xxh3": info.content_xxh3,
    }


def report_failures(failures: list[tuple[T, BaseException]], show: Callable[[T], str]) -> None:
    """Print every failure of a bulk operation; raise the first one's exit code."""
    if not failures:
        return
    worst = None
    for item, e in failures:
        f = failure_of(e, show(item))
        click.echo(f"ambry: error: {f.message}", err=True)
        worst = worst or f
    assert worst is not None
    raise Failure(worst.exit_code, f"{len(failures)} of the operations failed (see above)")
