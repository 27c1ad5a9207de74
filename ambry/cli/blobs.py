"""`ambry put | get | head | rm | ls | cp`: the user commands, over the Python SDK.

A blob is named by its id (43 URL-safe base64 characters, as ``POST /`` returns it) or by a
name ``[ambry://]<account>/<container>/<name>``; ``cp`` needs the ``ambry://`` scheme on the
remote side, since local paths have ``/`` too. Frontends come from ``--endpoint`` (repeat it,
or comma-separate, for failover) or ``$AMBRY_ENDPOINT`` (comma-separated), else
``http://127.0.0.1:1174`` (``make run``).

Every command runs on one event loop with an :class:`~ambry.client.AsyncClient`, so a
directory copy is a bounded number of concurrent transfers (``--jobs``) and Ctrl-C cancels
them cleanly (downloads never leave partial files). Errors are one line on stderr,
``ambry: error: <what>``, and an exit code that says what kind of failure it was
(:data:`EXIT_CODES_HELP`).

Owns argument parsing, output formats and the mapping of SDK errors to exit codes. Does not
own any transfer logic (the SDK does).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import sys
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from ambry.common.location import (
    SCHEME,
    Location,
    endpoints_from,
    guess_content_type,
    is_blob_id,
    parse_location,
)

if TYPE_CHECKING:
    from ambry.client import AsyncClient, BlobInfo, NamedEntry

__all__ = ["BLOB_COMMANDS", "EXIT_CODES_HELP"]

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

_PIECE_BYTES = 1024 * 1024
_DURATION = re.compile(r"(\d+)\s*([smhdw]?)", re.ASCII)
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


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


def _unknown_container(e: BaseException) -> bool:
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
    if _unknown_container(e):
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


def _fail(f: Failure) -> NoReturn:
    click.echo(f"ambry: error: {f.message}", err=True)
    raise click.exceptions.Exit(f.exit_code)


class _Command(click.Command):
    """A command whose usage errors exit 1 (click's own default, 2, means "not found" here)."""

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as e:
            e.exit_code = EXIT_USAGE  # type: ignore[misc]  # click declares it per class
            raise


def _usage(message: str) -> click.UsageError:
    e = click.UsageError(message)
    e.exit_code = EXIT_USAGE  # type: ignore[misc]  # click declares it per class
    return e


# ------------------------------------------------------------------ shared options
@dataclass(frozen=True)
class Conn:
    endpoints: list[str]
    progress: bool | None

    def client(self) -> AsyncClient:
        from ambry.client import AsyncClient

        return AsyncClient(self.endpoints, service_id="ambry-cli", progress=self.progress)


def _conn_options(f: Callable[..., Any]) -> Callable[..., Any]:
    @click.option("--endpoint", "-e", "endpoints", multiple=True, metavar="URL",
                  help="Frontend base URL; repeat (or comma-separate) for failover in order.")
    @click.option("--progress/--no-progress", default=None,
                  help="Progress bars on stderr [default: when stderr is a terminal].")
    @functools.wraps(f)
    def wrapper(*args: Any, endpoints: tuple[str, ...], progress: bool | None,
                **kwargs: Any) -> Any:
        return f(*args, conn=Conn(endpoints_from(list(endpoints)), progress), **kwargs)

    return wrapper


def _run(coro: Awaitable[T]) -> T:
    """Run a command's coroutine; report a failure as one line and its exit code."""
    async def main() -> T:
        return await coro

    try:
        return asyncio.run(main())
    except Failure as f:
        _fail(f)
    except KeyboardInterrupt:
        click.echo("ambry: interrupted", err=True)
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


Target = str | Location


def _target(text: str, *, allow_prefix: bool = False) -> Target:
    """A blob id, or the :class:`Location` of a name (``ambry://`` optional)."""
    if is_blob_id(text):
        return text.removeprefix("/")
    if text.startswith(SCHEME) or "/" in text:
        try:
            loc = parse_location(text)
        except ValueError as e:
            raise _usage(str(e)) from None
        if not allow_prefix and not loc.name.strip("/"):
            raise _usage(f"{text!r} names a container, not a blob: "
                         f"<account>/<container>/<name>")
        return loc
    raise _usage(f"{text!r} is neither a blob id (43 characters) nor a name "
                 f"([{SCHEME}]<account>/<container>/<name>)")


def _show(t: Target) -> str:
    return str(t) if isinstance(t, Location) else t


def _parse_ttl(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    """``1d``, ``12h``, ``30m``, ``45s``, ``3600`` (seconds); ``never`` / ``-1`` = forever."""
    if value is None or value.strip().lower() in ("never", "forever", "-1"):
        return None
    m = _DURATION.fullmatch(value.strip().lower())
    if m is None:
        raise click.BadParameter(f"{value!r}: use a number of seconds or 30m, 12h, 7d, 2w, "
                                 f"or 'never'")
    return int(m.group(1)) * _UNIT_S[m.group(2)]


def _parse_meta(_ctx: click.Context, _param: click.Parameter,
                value: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in value:
        key, sep, v = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: use key=value")
        out[key] = v
    return out


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


async def _each(items: Iterable[T] | AsyncIterable[T], fn: Callable[[T], Awaitable[None]],
                jobs: int) -> list[tuple[T, BaseException]]:
    """``fn(item)`` for every item, at most ``jobs`` at once (items are drawn as slots free
    up, so a long listing is never held whole); the failures, in the order they happened."""
    failures: list[tuple[T, BaseException]] = []
    slots = asyncio.Semaphore(jobs)
    stopped: Exception | None = None

    async def one(item: T) -> None:
        try:
            await fn(item)
        except Exception as e:  # noqa: BLE001 - reported with the item, the others go on
            failures.append((item, e))
        finally:
            slots.release()

    async with asyncio.TaskGroup() as tg:
        try:
            async for item in _aiter(items):
                await slots.acquire()
                tg.create_task(one(item))
        except Exception as e:  # noqa: BLE001 - the listing failed: finish, then say so
            stopped = e
    if stopped is not None:
        raise stopped
    return failures


async def _aiter(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


# ------------------------------------------------------------------ put
@click.command("put", cls=_Command, epilog=EXIT_CODES_HELP)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--name", "-n", metavar="[ambry://]ACCOUNT/CONTAINER/PATH",
              help="Store under this name (prints the name) instead of as a bare blob "
                   "(prints its id).")
@click.option("--ttl", callback=_parse_ttl, metavar="DURATION",
              help="Expire after 3600 (seconds), 30m, 12h, 7d, 2w [default: never].")
@click.option("-m", "--meta", "metadata", multiple=True, callback=_parse_meta,
              metavar="KEY=VALUE", help="User metadata; repeatable.")
@click.option("--content-type", "-t", help="[default: from the file extension]")
@click.option("--force", "-f", is_flag=True, help="Overwrite an existing name.")
@click.option("--account", help="Account of a bare blob [default: default].")
@click.option("--container", help="Container of a bare blob [default: default].")
@click.option("--json", "as_json", is_flag=True, help="Print {blob_id, name, size} as JSON.")
@_conn_options
def put(file: str, name: str | None, ttl: int | None, metadata: dict[str, str],
        content_type: str | None, force: bool, account: str | None, container: str | None,
        as_json: bool, conn: Conn) -> None:
    """Upload FILE (- for stdin) as a new blob and print its id, or with --name under a
    name and print the name.

    \b
      ambry put model.pt                       # -> AAEAAQAB...  (the blob id)
      ambry put model.pt --name default/models/runs/42/model.pt --ttl 30d -m step=1000
      tar c ckpt/ | ambry put - -n default/models/runs/42/ckpt.tar
    """
    loc = None
    if name is not None:
        target = _target(name)
        if not isinstance(target, Location):
            raise _usage(f"--name {name!r} is a blob id, not a name")
        loc = target
        if account or container:
            raise _usage("--account/--container are for bare blobs; a name carries its own")
    elif force:
        raise _usage("--force overwrites a name: give --name")
    if content_type:
        ctype = content_type
    elif file != "-":
        ctype = guess_content_type(file)
    else:
        ctype = guess_content_type(loc.name) if loc else "application/octet-stream"
    data: Any = _stdin_pieces() if file == "-" else file
    _run(_put(conn, data, loc, ttl=ttl, metadata=metadata, content_type=ctype, force=force,
              account=account, container=container, as_json=as_json,
              filename=None if file == "-" else Path(file).name))


def _stdin_pieces() -> Iterable[bytes]:
    while piece := sys.stdin.buffer.read(_PIECE_BYTES):
        yield piece


async def _put(conn: Conn, data: Any, loc: Location | None, *, ttl: int | None,
               metadata: dict[str, str], content_type: str, force: bool,
               account: str | None, container: str | None, as_json: bool,
               filename: str | None) -> None:
    what = str(loc) if loc else (filename or "stdin")
    async with conn.client() as c:
        try:
            if loc is not None:
                blob_id = await c.put_named(loc.name, data, upsert=force, ttl_s=ttl,
                                            user_metadata=metadata, content_type=content_type,
                                            filename=filename, account=loc.account,
                                            container=loc.container)
            else:
                blob_id = await c.put(data, ttl_s=ttl, user_metadata=metadata,
                                      content_type=content_type, filename=filename,
                                      account=account, container=container)
            info = await c.head(blob_id) if as_json else None
        except Exception as e:
            raise failure_of(e, what) from e
    if as_json:
        assert info is not None
        click.echo(json.dumps({"blob_id": blob_id, "name": str(loc) if loc else None,
                               "size": info.size}))
    else:
        click.echo(str(loc) if loc else blob_id)


# ------------------------------------------------------------------ get
@click.command("get", cls=_Command, epilog=EXIT_CODES_HELP)
@click.argument("blob", metavar="ID|NAME")
@click.option("-o", "--output", required=True, metavar="FILE",
              type=click.Path(allow_dash=True),
              help="Where to save it: a file, a directory (keeps the blob's name), or - for "
                   "stdout.")
@_conn_options
def get(blob: str, output: str, conn: Conn) -> None:
    """Download a blob by id or name; the bytes are checked against the xxh3 stored at
    upload. A file is written beside its destination and renamed into place when complete.

    \b
      ambry get AAEAAQAB... -o hello.txt
      ambry get default/models/runs/42/model.pt -o ./      # ./model.pt
      ambry get ambry://default/datasets/train.csv -o - | head
    """
    _run(_get(conn, _target(blob), output))


async def _get(conn: Conn, t: Target, output: str) -> None:
    from ambry.client import BlobNotFound

    async with conn.client() as c:
        try:
            if output == "-":
                reader = await (c.open_named(t.name, account=t.account, container=t.container)
                                if isinstance(t, Location) else c.open(t))
                async with reader:
                    await _to_stdout(reader, conn.progress)
                return
            dest = Path(output)
            if dest.is_dir():
                dest = dest / (PurePosixPath(t.name).name if isinstance(t, Location) else t)
            elif not dest.parent.is_dir():
                raise Failure(EXIT_USAGE, f"no such directory: {dest.parent}")
            if isinstance(t, Location):
                await c.download_named(t.name, dest, account=t.account, container=t.container)
            else:
                await c.download(t, dest)
        except BlobNotFound as e:
            if isinstance(t, Location) and await _has_names(c, t.with_name(t.name + "/")):
                raise Failure(EXIT_USAGE, f"{t} is a directory: use ambry cp -r") from e
            raise failure_of(e, _show(t)) from e
        except Exception as e:
            raise failure_of(e, _show(t)) from e


async def _to_stdout(reader: Any, progress: bool | None) -> None:
    from tqdm.auto import tqdm

    out = sys.stdout.buffer
    loop = asyncio.get_running_loop()
    bar = tqdm(total=reader.size, unit="B", unit_scale=True, unit_divisor=1024, leave=False,
               disable=None if progress is None else not progress, desc="get")
    try:
        while piece := await reader.read(_PIECE_BYTES):
            try:
                await loop.run_in_executor(None, out.write, piece)
            except BrokenPipeError:
                # the reader went away (| head): as cat does, stop quietly
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                return
            bar.update(len(piece))
        await loop.run_in_executor(None, out.flush)
    finally:
        bar.close()


# ------------------------------------------------------------------ head
@click.command("head", cls=_Command, epilog=EXIT_CODES_HELP)
@click.argument("blob", metavar="ID|NAME")
@click.option("--json", "as_json", is_flag=True, help="Print the properties as JSON.")
@_conn_options
def head(blob: str, as_json: bool, conn: Conn) -> None:
    """Print a blob's properties and user metadata (by id or name)."""
    _run(_head(conn, _target(blob), as_json))


def info_json(info: BlobInfo, name: str | None = None) -> dict[str, Any]:
    return {
        "blob_id": info.blob_id, "name": name, "size": info.size,
        "content_type": info.content_type, "created": _iso(info.created),
        "ttl_s": info.ttl_s, "expires": _iso(info.expires) if info.expires else None,
        "service_id": info.service_id, "owner_id": info.owner_id, "filename": info.filename,
        "account": info.account, "container": info.container,
        "user_metadata": dict(info.user_metadata), "content_xxh3": info.content_xxh3,
    }


async def _head(conn: Conn, t: Target, as_json: bool) -> None:
    async with conn.client() as c:
        try:
            if isinstance(t, Location):
                info = await c.head_named(t.name, account=t.account, container=t.container)
            else:
                info = await c.head(t)
        except Exception as e:
            if isinstance(t, Location) and not _unknown_container(e):
                await _check_container(c, t, e)
            raise failure_of(e, _show(t)) from e
    row = info_json(info, str(t) if isinstance(t, Location) else None)
    if as_json:
        click.echo(json.dumps(row, indent=2))
        return
    width = max(len(k) for k in row)
    for k, v in row.items():
        if k == "user_metadata":
            for mk, mv in sorted(info.user_metadata.items()):
                click.echo(f"{'metadata':<{width}}  {mk}={mv}")
        elif k == "size":
            click.echo(f"{k:<{width}}  {v} ({human_size(v)})")
        elif k == "ttl_s":
            click.echo(f"{'ttl':<{width}}  {'never expires' if v is None else f'{v} s'}")
        elif v not in (None, ""):
            click.echo(f"{k:<{width}}  {v}")


async def _check_container(c: AsyncClient, loc: Location, e: BaseException) -> None:
    """A HEAD reply has no body, so "unknown container" (a 400) is told by a listing."""
    from ambry.client import BadRequest

    if isinstance(e, BadRequest):
        try:
            async for _ in c.list_named("", account=loc.account, container=loc.container,
                                        page_size=1):
                break
        except BadRequest as e2:
            raise failure_of(e2, str(loc)) from e


# ------------------------------------------------------------------ rm
@click.command("rm", cls=_Command, epilog=EXIT_CODES_HELP)
@click.argument("blobs", metavar="ID|NAME...", nargs=-1, required=True)
@click.option("-r", "--recursive", is_flag=True,
              help="NAME is a directory: delete every name under NAME/ (and NAME itself).")
@click.option("-j", "--jobs", default=8, show_default=True, type=click.IntRange(1, 256),
              help="Deletes in flight at once.")
@click.option("-v", "--verbose", is_flag=True, help="Print every name deleted.")
@_conn_options
def rm(blobs: tuple[str, ...], recursive: bool, jobs: int, verbose: bool, conn: Conn) -> None:
    """Delete blobs by id, or names (each name deletes its blob too).

    \b
      ambry rm AAEAAQAB...
      ambry rm default/models/runs/42/model.pt
      ambry rm -r ambry://default/models/runs/42/       # the whole directory
    """
    targets = [_target(b, allow_prefix=recursive) for b in blobs]
    if not recursive:
        for t in targets:
            if isinstance(t, Location) and t.name.endswith("/"):
                raise _usage(f"{t} is a directory: use -r")
    _run(_rm(conn, targets, recursive, jobs, verbose))


async def _rm(conn: Conn, targets: list[Target], recursive: bool, jobs: int,
              verbose: bool) -> None:
    from ambry.client import BlobNotFound

    async with conn.client() as c:
        for t in targets:
            if not isinstance(t, Location):
                try:
                    await c.delete(t)
                except Exception as e:
                    raise failure_of(e, t) from e
                continue
            if not recursive:
                try:
                    await c.delete_named(t.name, account=t.account, container=t.container)
                except BlobNotFound as e:
                    if await _has_names(c, t.with_name(t.name + "/")):
                        raise Failure(EXIT_USAGE, f"{t} is a directory: use -r") from e
                    raise failure_of(e, str(t)) from e
                except Exception as e:
                    raise failure_of(e, str(t)) from e
                if verbose:
                    click.echo(f"deleted {t}")
                continue
            deleted = 0

            async def delete(e: NamedEntry, t: Location = t) -> None:
                nonlocal deleted
                await c.delete_named(e.name, account=t.account, container=t.container)
                deleted += 1
                if verbose:
                    click.echo(f"deleted {t.with_name(e.name)}")

            failures = await _each(_under(c, t), delete, jobs)
            _report(failures, functools.partial(_name_in, t))
            if not deleted and not failures:
                raise Failure(EXIT_NOT_FOUND, f"no names under {t}")


async def _has_names(c: AsyncClient, loc: Location) -> bool:
    """Whether some name starts with ``loc.name`` (False when that cannot be told)."""
    from ambry.client import ApiError

    try:
        async for _ in c.list_named(loc.name, account=loc.account, container=loc.container,
                                    page_size=1):
            return True
    except ApiError:
        pass
    return False


async def _under(c: AsyncClient, loc: Location) -> AsyncIterator[NamedEntry]:
    """Every name of the directory ``loc`` (``loc`` itself, and every name under ``loc/``;
    the whole container for its root), sorted, page by page."""
    from ambry.client import ApiError

    d = loc.name.rstrip("/")
    try:
        async for e in c.list_named(d, account=loc.account, container=loc.container):
            if not d or e.name == d or e.name.startswith(d + "/"):
                yield e
    except ApiError as err:
        raise failure_of(err, str(loc)) from err


def _name_in(loc: Location, e: NamedEntry) -> str:
    return str(loc.with_name(e.name))


def _report(failures: list[tuple[T, BaseException]], show: Callable[[T], str]) -> None:
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


# ------------------------------------------------------------------ ls
@click.command("ls", cls=_Command, epilog=EXIT_CODES_HELP)
@click.argument("prefix", metavar="[ambry://]ACCOUNT/CONTAINER[/PREFIX]")
@click.option("-r", "--recursive", is_flag=True,
              help="Every name under PREFIX, instead of one level (names up to the next /; "
                   "deeper ones as directories).")
@click.option("--json", "as_json", is_flag=True,
              help="A JSON array of {name, type, size, blob_id, content_type, created}.")
@click.option("-H", "--human", is_flag=True, help="Sizes in KiB, MiB, GiB.")
@_conn_options
def ls(prefix: str, recursive: bool, as_json: bool, human: bool, conn: Conn) -> None:
    """List names that start with PREFIX (as S3 does: runs/4 matches runs/42/;
    end it with / to list a directory). Names are shown relative to the container, with the
    creation time (UTC) and size of the blob each points to.

    \b
      ambry ls default/models/runs/
      ambry ls -r --json ambry://default/models/runs/42/
    """
    try:
        loc = parse_location(prefix)
    except ValueError as e:
        raise _usage(str(e)) from None
    _run(_ls(conn, loc, recursive, as_json, human))


async def _ls(conn: Conn, loc: Location, recursive: bool, as_json: bool, human: bool) -> None:
    from ambry.client import ApiError

    rows: list[dict[str, Any]] = []

    def emit(row: dict[str, Any]) -> None:
        if as_json:
            rows.append(row)
        elif row["type"] == "directory":
            click.echo(f"{'':19}  {'DIR':>12}  {row['name']}")
        else:
            size = human_size(row["size"]) if human else str(row["size"])
            click.echo(f"{row['created'][:19].replace('T', ' ')}  {size:>12}  {row['name']}")

    from ambry.client import NamedPrefix

    async with conn.client() as c:
        try:
            # one level: the frontend rolls deeper names up into directories and skips
            # them (delimiter listing), so a directory costs its children, not its tree
            listing = c.list_named(loc.name, account=loc.account, container=loc.container) \
                if recursive else c.list_dir(loc.name, account=loc.account,
                                             container=loc.container)
            async for e in listing:
                if isinstance(e, NamedPrefix):
                    emit({"name": e.name, "type": "directory"})
                    continue
                emit({"name": e.name, "type": "file", "size": e.size, "blob_id": e.blob_id,
                      "content_type": e.content_type, "created": _iso(e.created)})
        except ApiError as err:
            raise failure_of(err, str(loc)) from err
    if as_json:
        click.echo(json.dumps(rows, indent=2))


# ------------------------------------------------------------------ cp
@click.command("cp", cls=_Command, epilog=EXIT_CODES_HELP)
@click.argument("src")
@click.argument("dst")
@click.option("-r", "--recursive", is_flag=True,
              help="Copy a directory tree: the contents of SRC go into DST (as "
                   "aws s3 cp --recursive).")
@click.option("--skip-existing", is_flag=True,
              help="Skip a file whose destination already exists with the same size.")
@click.option("-j", "--jobs", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Files in flight at once (each large file also moves in parallel parts).")
@_conn_options
def cp(src: str, dst: str, recursive: bool, skip_existing: bool, jobs: int,
       conn: Conn) -> None:
    """Copy files to, from or between named blobs; the remote side is written
    ambry://ACCOUNT/CONTAINER/PATH. A destination ending in / is a directory. Uploads
    overwrite existing names; downloads create missing directories.

    \b
      ambry cp model.pt ambry://default/models/runs/42/
      ambry cp -r ./checkpoint ambry://default/models/run42/
      ambry cp -r --skip-existing ambry://default/models/run42/ ./checkpoint
      ambry cp ambry://default/models/run42/model.pt ambry://default/models/best.pt
    """
    s_remote, d_remote = src.startswith(SCHEME), dst.startswith(SCHEME)
    if not s_remote and not d_remote:
        raise _usage("one side must be ambry://<account>/<container>/<path> (use cp(1) "
                     "for local copies)")
    try:
        s = parse_location(src) if s_remote else src
        d = parse_location(dst) if d_remote else dst
    except ValueError as e:
        raise _usage(str(e)) from None
    if not recursive:
        if isinstance(s, str) and os.path.isdir(s):
            raise _usage(f"{src} is a directory: use -r")
        if isinstance(s, Location) and not s.name.strip("/"):
            raise _usage(f"{src} is a container: use -r")
    elif isinstance(s, str) and not os.path.isdir(s):
        raise _usage(f"{src} is not a directory")
    if isinstance(s, str) and not os.path.exists(s):
        raise _usage(f"{src}: no such file or directory")
    _run(_Copier(conn, skip_existing, jobs).run(s, d, recursive))


class _Copier:
    def __init__(self, conn: Conn, skip_existing: bool, jobs: int) -> None:
        self.conn = conn
        self.skip_existing = skip_existing
        self.jobs = jobs
        self.copied = 0
        self.skipped = 0
        self.bytes = 0
        self.bar: Any = None
        #: name -> size under the destination of a recursive upload (--skip-existing)
        self.remote_sizes: dict[str, int] | None = None

    async def run(self, s: str | Location, d: str | Location, recursive: bool) -> None:
        async with self.conn.client() as self.c:
            if not recursive:
                await self._one(s, d)
                return
            from tqdm.auto import tqdm

            self.bar = tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc="cp",
                            disable=(None if self.conn.progress is None
                                     else not self.conn.progress), dynamic_ncols=True)
            try:
                pairs, total = await self._plan(s, d)
                self.bar.total = total
                failures = await _each(pairs, self._pair, self.jobs)
            finally:
                self.bar.close()
            click.echo(f"copied {self.copied} files ({human_size(self.bytes)})"
                       + (f", skipped {self.skipped} unchanged" if self.skip_existing else ""),
                       err=True)
            _report(failures, lambda p: _show_path(p[0]))
            if not pairs:
                raise Failure(EXIT_NOT_FOUND, f"nothing to copy under {_show_path(s)}")

    # one file: destinations ending in "/" (or local directories) keep the source's name
    async def _one(self, s: str | Location, d: str | Location) -> None:
        base = PurePosixPath(s.name).name if isinstance(s, Location) else Path(s).name
        if isinstance(d, Location):
            if not d.name or d.name.endswith("/"):
                d = d.with_name(d.name + base)
        elif d.endswith(("/", os.sep)) or os.path.isdir(d):
            d = os.path.join(d, base)
        size = None
        if isinstance(s, Location):
            try:
                info = await self.c.head_named(s.name, account=s.account,
                                               container=s.container)
            except Exception as e:
                if await _has_names(self.c, s.with_name(s.name.rstrip("/") + "/")):
                    raise Failure(EXIT_USAGE, f"{s} is a directory: use -r") from e
                raise failure_of(e, str(s)) from e
            size = info.size
        await self._pair((s, d, size))

    async def _plan(self, s: str | Location, d: str | Location
                    ) -> tuple[list[tuple[str | Location, str | Location, int | None]], int]:
        """Every (source, destination, size) of a recursive copy, and the bytes in all."""
        pairs: list[tuple[str | Location, str | Location, int | None]] = []
        if isinstance(s, str):
            if self.skip_existing and isinstance(d, Location):
                self.remote_sizes = {e.name: e.size async for e in _under(self.c, d)}
            root = Path(s)
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for fn in sorted(filenames):
                    p = Path(dirpath) / fn
                    rel = p.relative_to(root).as_posix()
                    pairs.append((str(p), _join(d, rel), p.stat().st_size))
        else:
            base = s.name.rstrip("/")
            async for e in _under(self.c, s):
                rel = e.name[len(base):].lstrip("/") if base else e.name
                if not rel:  # the directory's own name is a file too: keep its name
                    rel = PurePosixPath(e.name).name
                if not _safe_rel(rel):
                    click.echo(f"ambry: warning: skipped {s.with_name(e.name)}: the name "
                               f"cannot be a local path", err=True)
                    continue
                pairs.append((s.with_name(e.name), _join(d, rel), e.size))
        return pairs, sum(p[2] or 0 for p in pairs)

    async def _pair(self, pair: tuple[str | Location, str | Location, int | None]) -> None:
        s, d, size = pair
        single = self.bar is None
        progress = self.conn.progress if single else False
        if self.skip_existing and size is not None and await self._same_size(d, size):
            self.skipped += 1
            self._advance(size)
            return
        c = self.c
        if isinstance(s, str) and isinstance(d, Location):
            await c.put_named(d.name, s, upsert=True, content_type=guess_content_type(s),
                              account=d.account, container=d.container, progress=progress)
        elif isinstance(s, Location) and isinstance(d, str):
            Path(d).parent.mkdir(parents=True, exist_ok=True)
            info = await c.download_named(s.name, d, account=s.account, container=s.container,
                                          progress=progress)
            size = info.size
        elif isinstance(s, Location) and isinstance(d, Location):
            async with await c.open_named(s.name, account=s.account,
                                          container=s.container) as reader:
                i = reader.info
                await c.put_named(d.name, reader, upsert=True, content_type=i.content_type,
                                  user_metadata=dict(i.user_metadata),
                                  owner_id=i.owner_id or None, filename=i.filename or None,
                                  account=d.account, container=d.container, progress=progress)
                size = i.size
        self.copied += 1
        self.bytes += size or 0
        self._advance(size or 0)

    def _advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix_str(f"{self.copied} copied, {self.skipped} skipped",
                                     refresh=False)

    async def _same_size(self, d: str | Location, size: int) -> bool:
        if isinstance(d, str):
            try:
                return os.stat(d).st_size == size
            except OSError:
                return False
        if self.remote_sizes is not None:
            return self.remote_sizes.get(d.name) == size
        from ambry.client import ApiError

        try:
            info = await self.c.head_named(d.name, account=d.account, container=d.container)
        except ApiError:
            return False
        return info.size == size


def _join(d: str | Location, rel: str) -> str | Location:
    if isinstance(d, Location):
        base = d.name.rstrip("/")
        return d.with_name(f"{base}/{rel}" if base else rel)
    return os.path.join(d, *rel.split("/"))


def _safe_rel(rel: str) -> bool:
    """Whether a name, relative to the directory copied, is a path inside the destination
    (no "..", no empty or absolute parts)."""
    parts = rel.split("/")
    return all(p not in ("", ".", "..") and "\0" not in p for p in parts) and \
        not os.path.isabs(rel)


def _show_path(p: str | Location) -> str:
    return str(p)


#: The commands this module adds to ``ambry``.
BLOB_COMMANDS: list[click.Command] = [put, get, head, rm, ls, cp]

