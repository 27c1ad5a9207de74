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

Owns the commands ``put``, ``get``, ``head``, ``rm`` and ``ls`` (what each asks the SDK and
prints) and the list of blob commands. Reading arguments is ``args``, messages, exit codes and
formats are ``output``, walking a directory's names is ``bulk``, ``cp`` is ``copy``; any
transfer logic is the SDK's.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import click

from ambry.cli.args import (
    Conn,
    Target,
    conn_options,
    parse_meta,
    parse_target,
    parse_ttl,
    show_target,
)
from ambry.cli.bulk import for_each, has_names, name_in, names_under
from ambry.cli.copy import cp
from ambry.cli.output import (
    EXIT_CODES_HELP,
    EXIT_CONFLICT,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_OTHER,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    Command,
    Failure,
    failure_of,
    human_size,
    info_json,
    iso_time,
    report_failures,
    run,
    unknown_container,
    usage_error,
)
from ambry.common.location import Location, guess_content_type, parse_location

if TYPE_CHECKING:
    from ambry.client import AsyncClient, NamedEntry

# (the exit codes, Failure, failure_of, human_size and info_json lived here before the
# commands' shared pieces moved to args, output and bulk: still importable from here)
__all__ = [
    "BLOB_COMMANDS", "EXIT_CODES_HELP", "EXIT_CONFLICT", "EXIT_INTERRUPTED", "EXIT_NOT_FOUND",
    "EXIT_OK", "EXIT_OTHER", "EXIT_UNAVAILABLE", "EXIT_USAGE", "Conn", "Failure", "failure_of",
    "human_size", "info_json",
]

_PIECE_BYTES = 1024 * 1024


# ------------------------------------------------------------------ put
@click.command("put", cls=Command, epilog=EXIT_CODES_HELP)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--name", "-n", metavar="[ambry://]ACCOUNT/CONTAINER/PATH",
              help="Store under this name (prints the name) instead of as a bare blob "
                   "(prints its id).")
@click.option("--ttl", callback=parse_ttl, metavar="DURATION",
              help="Expire after 3600 (seconds), 30m, 12h, 7d, 2w [default: never].")
@click.option("-m", "--meta", "metadata", multiple=True, callback=parse_meta,
              metavar="KEY=VALUE", help="User metadata; repeatable.")
@click.option("--content-type", "-t", help="[default: from the file extension]")
@click.option("--force", "-f", is_flag=True, help="Overwrite an existing name.")
@click.option("--account", help="Account of a bare blob [default: default].")
@click.option("--container", help="Container of a bare blob [default: default].")
@click.option("--json", "as_json", is_flag=True, help="Print {blob_id, name, size} as JSON.")
@conn_options
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
        target = parse_target(name)
        if not isinstance(target, Location):
            raise usage_error(f"--name {name!r} is a blob id, not a name")
        loc = target
        if account or container:
            raise usage_error("--account/--container are for bare blobs; a name carries its own")
    elif force:
        raise usage_error("--force overwrites a name: give --name")
    if content_type:
        ctype = content_type
    elif file != "-":
        ctype = guess_content_type(file)
    else:
        ctype = guess_content_type(loc.name) if loc else "application/octet-stream"
    data: Any = _stdin_pieces() if file == "-" else file
    run(_put(conn, data, loc, ttl=ttl, metadata=metadata, content_type=ctype, force=force,
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
@click.command("get", cls=Command, epilog=EXIT_CODES_HELP)
@click.argument("blob", metavar="ID|NAME")
@click.option("-o", "--output", required=True, metavar="FILE",
              type=click.Path(allow_dash=True),
              help="Where to save it: a file, a directory (keeps the blob's name), or - for "
                   "stdout.")
@conn_options
def get(blob: str, output: str, conn: Conn) -> None:
    """Download a blob by id or name; the bytes are checked against the xxh3 stored at
    upload. A file is written beside its destination and renamed into place when complete.

    \b
      ambry get AAEAAQAB... -o hello.txt
      ambry get default/models/runs/42/model.pt -o ./      # ./model.pt
      ambry get ambry://default/datasets/train.csv -o - | head
    """
    run(_get(conn, parse_target(blob), output))


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
            if isinstance(t, Location) and await has_names(c, t.with_name(t.name + "/")):
                raise Failure(EXIT_USAGE, f"{t} is a directory: use ambry cp -r") from e
            raise failure_of(e, show_target(t)) from e
        except Exception as e:
            raise failure_of(e, show_target(t)) from e


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
@click.command("head", cls=Command, epilog=EXIT_CODES_HELP)
@click.argument("blob", metavar="ID|NAME")
@click.option("--json", "as_json", is_flag=True, help="Print the properties as JSON.")
@conn_options
def head(blob: str, as_json: bool, conn: Conn) -> None:
    """Print a blob's properties and user metadata (by id or name)."""
    run(_head(conn, parse_target(blob), as_json))



async def _head(conn: Conn, t: Target, as_json: bool) -> None:
    async with conn.client() as c:
        try:
            if isinstance(t, Location):
                info = await c.head_named(t.name, account=t.account, container=t.container)
            else:
                info = await c.head(t)
        except Exception as e:
            if isinstance(t, Location) and not unknown_container(e):
                await _check_container(c, t, e)
            raise failure_of(e, show_target(t)) from e
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
@click.command("rm", cls=Command, epilog=EXIT_CODES_HELP)
@click.argument("blobs", metavar="ID|NAME...", nargs=-1, required=True)
@click.option("-r", "--recursive", is_flag=True,
              help="NAME is a directory: delete every name under NAME/ (and NAME itself).")
@click.option("-j", "--jobs", default=8, show_default=True, type=click.IntRange(1, 256),
              help="Deletes in flight at once.")
@click.option("-v", "--verbose", is_flag=True, help="Print every name deleted.")
@conn_options
def rm(blobs: tuple[str, ...], recursive: bool, jobs: int, verbose: bool, conn: Conn) -> None:
    """Delete blobs by id, or names (each name deletes its blob too).

    \b
      ambry rm AAEAAQAB...
      ambry rm default/models/runs/42/model.pt
      ambry rm -r ambry://default/models/runs/42/       # the whole directory
    """
    targets = [parse_target(b, allow_prefix=recursive) for b in blobs]
    if not recursive:
        for t in targets:
            if isinstance(t, Location) and t.name.endswith("/"):
                raise usage_error(f"{t} is a directory: use -r")
    run(_rm(conn, targets, recursive, jobs, verbose))


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
                    if await has_names(c, t.with_name(t.name + "/")):
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

            failures = await for_each(names_under(c, t), delete, jobs)
            report_failures(failures, functools.partial(name_in, t))
            if not deleted and not failures:
                raise Failure(EXIT_NOT_FOUND, f"no names under {t}")



# ------------------------------------------------------------------ ls
@click.command("ls", cls=Command, epilog=EXIT_CODES_HELP)
@click.argument("prefix", metavar="[ambry://]ACCOUNT/CONTAINER[/PREFIX]")
@click.option("-r", "--recursive", is_flag=True,
              help="Every name under PREFIX, instead of one level (names up to the next /; "
                   "deeper ones as directories).")
@click.option("--json", "as_json", is_flag=True,
              help="A JSON array of {name, type, size, blob_id, content_type, created}.")
@click.option("-H", "--human", is_flag=True, help="Sizes in KiB, MiB, GiB.")
@conn_options
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
        raise usage_error(str(e)) from None
    run(_ls(conn, loc, recursive, as_json, human))


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
                      "content_type": e.content_type, "created": iso_time(e.created)})
        except ApiError as err:
            raise failure_of(err, str(loc)) from err
    if as_json:
        click.echo(json.dumps(rows, indent=2))


#: The commands this module adds to ``ambry``.
BLOB_COMMANDS: list[click.Command] = [put, get, head, rm, ls, cp]
