"""Reactions: a participant's emojis on a message, each put on or taken off as an entry of the log.

Setting what is already set changes nothing and appends nothing, so a retried call is harmless. The
entry carries the message's counts right after it, so clients apply it as an absolute state.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from chatpop.messaging.v1 import messaging_pb2
from chatpop_common.errors import FailedPrecondition, InvalidArgument, NotFound
from chatpop_messaging.store import (
    KIND_REACTION,
    REACTIONS,
    Actor,
    Change,
    append_change,
    lock_target,
    reaction_counts,
)

_COUNTS = """
SELECT emoji, count(*) AS n FROM reactions WHERE room_id = $1 AND message_seq = $2 GROUP BY emoji
"""
_MINE = """
SELECT emoji FROM reactions WHERE room_id = $1 AND message_seq = $2 AND participant_id = $3
"""


@dataclass(frozen=True, slots=True)
class ReactionResult:
    entry: messaging_pb2.Message | None
    state: messaging_pb2.MessageState
    mine: list[str]


def valid_emoji(emoji: str) -> str:
    if emoji not in REACTIONS:
        raise InvalidArgument(f"The reaction must be one of {' '.join(REACTIONS)}.", code="invalid_reaction")
    return emoji


def _mine_in_order(emojis: list[str]) -> list[str]:
    return [emoji for emoji in REACTIONS if emoji in emojis]


class Reactions:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def set(self, room_id: str, target_seq: int, actor: Actor, emoji: str, on: bool) -> ReactionResult:
        async with self._pool.acquire() as connection, connection.transaction():
            target = await lock_target(connection, room_id, target_seq)
            if target is None:
                raise NotFound("There is no such message in this room.", code="message_not_found")
            if target["deleted_at"] is not None:
                raise FailedPrecondition("This message was deleted.", code="message_deleted")
            if on:
                status = await connection.execute(
                    "INSERT INTO reactions (room_id, message_seq, participant_id, emoji) "
                    "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    room_id,
                    target_seq,
                    actor.participant_id,
                    emoji,
                )
                changed = status == "INSERT 0 1"
            else:
                status = await connection.execute(
                    "DELETE FROM reactions WHERE room_id = $1 AND message_seq = $2 "
                    "AND participant_id = $3 AND emoji = $4",
                    room_id,
                    target_seq,
                    actor.participant_id,
                    emoji,
                )
                changed = status == "DELETE 1"
            counts = {
                row["emoji"]: int(row["n"]) for row in await connection.fetch(_COUNTS, room_id, target_seq)
            }
            mine = _mine_in_order(
                [
                    row["emoji"]
                    for row in await connection.fetch(_MINE, room_id, target_seq, actor.participant_id)
                ]
            )
            if not changed:
                state = messaging_pb2.MessageState(
                    reactions=reaction_counts(counts), state_seq=target["state_seq"]
                )
                return ReactionResult(None, state, mine)
            entry = await append_change(
                connection,
                room_id,
                actor,
                Change(
                    kind=KIND_REACTION,
                    target_seq=target_seq,
                    emoji=emoji,
                    added=on,
                    reaction_counts=counts,
                ),
            )
        return ReactionResult(entry, entry.state, mine)
