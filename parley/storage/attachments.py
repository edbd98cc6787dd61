"""Attachments: the images and files a person sent with a message.

Stored by the gateway under the turn's id before the turn starts (the message itself is
stored by the turn, under the same `turn_id`); read back by every later model call, which
sends the images again, and by the turn's tools, which get the files.
"""

from __future__ import annotations

from collections.abc import Iterable

from parley.attachments import File, Image
from parley.storage.db import Conn

# The files a tool may list from its conversation (the newest ones).
MAX_CONVERSATION_FILES = 50


async def store(
    conn: Conn,
    conversation_id: str,
    turn_id: str,
    images: Iterable[Image],
    files: Iterable[File],
) -> None:
    """Store a turn's attachments in their order; storing them again changes nothing."""
    rows = [
        (turn_id, "image", i, conversation_id, im.media_type, im.data, im.url, None, im.detail)
        for i, im in enumerate(images)
    ] + [
        (turn_id, "file", i, conversation_id, f.mime_type, None, f.url, f.name, None)
        for i, f in enumerate(files)
    ]
    if not rows:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            "insert into attachments (turn_id, kind, position, conversation_id, media_type,"
            " data, url, name, detail) values (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " on conflict do nothing",
            rows,
        )


async def delete_turn(conn: Conn, turn_id: str) -> None:
    """Forget the attachments of a turn that never started."""
    await conn.execute("delete from attachments where turn_id = %s", (turn_id,))


async def images_by_turn(conn: Conn, turn_ids: list[str]) -> dict[str, list[Image]]:
    """The images of each of these turns' messages, in the order they were sent."""
    if not turn_ids:
        return {}
    cur = await conn.execute(
        "select turn_id, media_type, data, url, detail from attachments"
        " where turn_id = any(%s) and kind = 'image' order by turn_id, position",
        (turn_ids,),
    )
    found: dict[str, list[Image]] = {}
    for row in await cur.fetchall():
        data = row["data"]
        found.setdefault(row["turn_id"], []).append(
            Image(
                media_type=row["media_type"],
                data=bytes(data) if data is not None else None,
                url=row["url"],
                detail=row["detail"],
            )
        )
    return found


async def turn_files(conn: Conn, turn_id: str) -> list[File]:
    """The files sent with the message a turn answers."""
    cur = await conn.execute(
        "select name, url, media_type from attachments"
        " where turn_id = %s and kind = 'file' order by position",
        (turn_id,),
    )
    return [_file(row) for row in await cur.fetchall()]


async def conversation_files(conn: Conn, turn_id: str) -> list[File]:
    """The files sent with the stored messages of a turn's conversation, up to and including
    the turn's own, oldest first (the newest `MAX_CONVERSATION_FILES`)."""
    cur = await conn.execute(
        "select a.name, a.url, a.media_type from attachments a"
        " join messages m on m.turn_id = a.turn_id and m.direction = 'inbound'"
        " where a.kind = 'file' and m.conversation_id ="
        "  (select conversation_id from messages where turn_id = %s and direction = 'inbound')"
        " and m.seq <= (select seq from messages where turn_id = %s and direction = 'inbound')"
        " order by m.seq desc, a.position desc limit %s",
        (turn_id, turn_id, MAX_CONVERSATION_FILES),
    )
    return [_file(row) for row in reversed(await cur.fetchall())]


def _file(row: dict) -> File:
    return File(name=row["name"], url=row["url"], mime_type=row["media_type"])
