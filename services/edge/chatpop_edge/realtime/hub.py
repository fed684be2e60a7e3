"""Fan-out: one MessagingService.Subscribe stream per room that has sockets in this process.

A RoomChannel encodes each message frame once (and serializes it as a WebSocket frame once) and
hands it to every local socket without awaiting anything per recipient. A message alone goes straight
to the transport of each socket that has nothing queued before it, in the one pass; a socket with
frames waiting (or a slow one) gets it queued behind them, and its own writer task sends all that is
pending for it in one write. A `batch` event (a group commit) is queued on every socket in one pass,
then each socket's frames go out in one write.
The channel keeps the room's `last_seq` and, when the stream breaks (messaging restarted),
resubscribes after it with backoff, so nothing is missed or delivered twice.

The same stream brings the room's ephemeral signals (typing, presence, room_updated) from every
edge process; each is encoded once too and pushed to the local sockets outside the message order.
A kick (a site-wide ban revoked a participant's room tokens) closes that participant's sockets.
A participant's changed mutes come the same way but are private: only that participant's own sockets
learn the list (a `mutes` frame), and it decides which typing signals reach them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import grpc

from chatpop.messaging.v1 import messaging_pb2
from chatpop_common.backoff import Backoff
from chatpop_edge.backends import Backends, auth_metadata
from chatpop_edge.connections import SHARED_FRAMES
from chatpop_edge.metrics import DELIVERIES, RESUBSCRIBES, ROOM_SUBSCRIPTIONS, SIGNALS_RECEIVED
from chatpop_edge.realtime.frames import (
    error_frame,
    message_frame,
    presence_frame,
    room_updated_frame,
    typing_frame,
)

if TYPE_CHECKING:
    from chatpop_edge.realtime.presence import PresenceReporter
    from chatpop_edge.realtime.session import SocketSession

log = logging.getLogger(__name__)

# The close code of a banned participant's sockets (as for any token refused in this room).
CLOSE_BANNED = 4403
# The close code of every socket of a room an admin took down (and of any socket opened on it later).
CLOSE_TAKEN_DOWN = 4410
TAKEN_DOWN = "room_taken_down"
# The reason a site-wide ban's kick closes a participant's sockets with (close code 4403).
SITE_BANNED = "site_banned"
SITE_BANNED_MESSAGE = "You were banned from ChatPop by its moderators."
# A Back Room holder's seat was removed (by the host, or with a ban in the main room).
SEAT_REMOVED = "seat_removed"
SEAT_REMOVED_MESSAGE = "Your seat in this Back Room was removed by its host."
# Kicks that tell their participant why before the socket closes.
ACCOUNT_DELETED = "account_deleted"
_KICK_MESSAGES = {
    SITE_BANNED: SITE_BANNED_MESSAGE,
    SEAT_REMOVED: SEAT_REMOVED_MESSAGE,
    ACCOUNT_DELETED: "This account was deleted.",
}


def created_at_seconds(message: messaging_pb2.Message) -> float:
    return message.created_at.seconds + message.created_at.nanos / 1e9


class RoomChannel:
    """The room's live stream in this process, shared by all of its local sockets."""

    def __init__(self, room_id: str, backends: Backends, public_url: str) -> None:
        self.room_id = room_id
        self._backends = backends
        self._public_url = public_url
        # Highest seq this process has fanned out; valid once `ready`.
        self.last_seq = 0
        self.ready = False
        self._members: dict[SocketSession, None] = {}
        self._waiting: dict[SocketSession, None] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def empty(self) -> bool:
        return not self._members and not self._waiting

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"room-channel-{self.room_id}")
        return self._task

    def cancel(self) -> asyncio.Task[None] | None:
        if self._task is not None:
            self._task.cancel()
        return self._task

    def add(self, session: SocketSession) -> None:
        """A socket joins; once the channel knows the room's position the socket is live from there."""
        if self.ready:
            self._members[session] = None
            session.go_live(self.last_seq)
        else:
            self._waiting[session] = None

    def discard(self, session: SocketSession) -> None:
        self._members.pop(session, None)
        self._waiting.pop(session, None)

    def _signal(self, signal: messaging_pb2.Signal) -> None:
        """An ephemeral frame for the room's live sockets; typing skips the typist's own sockets and
        those of anyone who muted the typist."""
        kind = signal.WhichOneof("kind")
        if kind == "kick":
            SIGNALS_RECEIVED.labels(kind).inc()
            self._kick(signal.kick.participant_id, signal.kick.code or SITE_BANNED)
            return
        if kind == "typing":
            SIGNALS_RECEIVED.labels(kind).inc()
            typist = signal.typing.participant_id
            frame = typing_frame(typist, signal.typing.username)
            for session in tuple(self._members):
                if session.principal.participant_id != typist and not session.has_muted(typist):
                    session.push(frame)
            return
        if kind == "mutes_changed":
            SIGNALS_RECEIVED.labels(kind).inc()
            self._set_mutes(signal.mutes_changed)
            return
        if kind == "presence":
            frame = presence_frame(signal.presence)
        elif kind == "room_updated":
            frame = room_updated_frame(signal.room_updated.room, self._public_url)
            if signal.room_updated.room.taken_down:
                SIGNALS_RECEIVED.labels(kind).inc()
                self._take_down(frame)
                return
        else:
            # A kind this edge does not know yet (a newer messaging): nothing to show.
            return
        SIGNALS_RECEIVED.labels(kind).inc()
        for session in tuple(self._members):
            session.push(frame)

    def _token_holder(self) -> SocketSession | None:
        """The socket whose room token lives longest: the stream is opened on its behalf."""
        candidates = [*self._members, *self._waiting]
        if not candidates:
            return None
        return max(candidates, key=lambda session: session.token_expires_at)

    def _go_ready(self, last_seq: int) -> None:
        self.last_seq = last_seq
        self.ready = True
        waiting = list(self._waiting)
        self._waiting.clear()
        for session in waiting:
            self._members[session] = None
            session.go_live(last_seq)

    def _dispatch(self, message: messaging_pb2.Message) -> None:
        if message.seq <= self.last_seq:
            # Backfill after a resubscribe may repeat what was already fanned out.
            return
        self.last_seq = message.seq
        frame = message_frame(message)
        created = created_at_seconds(message)
        for session in tuple(self._members):
            session.offer(message.seq, frame, created)
        self._after(message)

    def _dispatch_one(self, message: messaging_pb2.Message) -> None:
        """A message alone (not a batch): written at once to every socket with nothing before it,
        the same serialized frame to each, in this one pass; offered and flushed on the others."""
        seq = message.seq
        if seq <= self.last_seq:
            return
        self.last_seq = seq
        frame = message_frame(message)
        created = created_at_seconds(message)
        wire = SHARED_FRAMES.wire(frame)
        written = 0
        offered: list[SocketSession] = []
        for session in tuple(self._members):
            if session.deliver_now(seq, wire):
                written += 1
            else:
                session.offer(seq, frame, created)
                offered.append(session)
        if written:
            DELIVERIES.written_together(time.time(), created, written)
        for session in offered:
            session.flush()
        self._after(message)

    def _after(self, message: messaging_pb2.Message) -> None:
        """What an entry does besides its frame: a ban's or a forgotten account's sockets close."""
        if message.kind == messaging_pb2.ENTRY_KIND_BAN:
            self._kick(message.sender_participant_id)
        elif message.kind == messaging_pb2.ENTRY_KIND_PARTICIPANT_FORGOTTEN:
            # The deleted account's own sockets (their tokens are revoked already) close too.
            self._kick(message.sender_participant_id, ACCOUNT_DELETED)

    def _flush(self) -> None:
        for session in tuple(self._members):
            session.flush()

    def _kick(self, participant_id: str, reason: str = "banned") -> None:
        """A ban entry, or a kick signal (a site-wide ban revoked the participant's room tokens): the
        participant's sockets here close (4403 with the reason; a ban's right after its frame), and
        their standing is asked of rooms again before anything else of theirs goes on."""
        self._backends.standing.forget(self.room_id, participant_id)
        for session in [*self._members, *self._waiting]:
            if session.principal.participant_id == participant_id:
                if reason in _KICK_MESSAGES:
                    session.push(error_frame(reason, _KICK_MESSAGES[reason]))
                session.request_close(CLOSE_BANNED, reason)

    def _take_down(self, frame: str) -> None:
        """The room was taken down: every socket of it here gets the room as it is now, then closes
        (4410 `room_taken_down`); no token of the room is trusted from the cache any more."""
        self._backends.standing.forget_room(self.room_id)
        for session in [*self._members, *self._waiting]:
            session.push(frame)
            session.request_close(CLOSE_TAKEN_DOWN, TAKEN_DOWN)

    def _set_mutes(self, change: messaging_pb2.MutesChanged) -> None:
        """A participant's mutes changed: tell their sockets here, and nobody else's."""
        for session in [*self._members, *self._waiting]:
            if session.principal.participant_id == change.participant_id:
                session.set_mutes(change.muted_participant_ids)

    def _reload(self, last_seq: int) -> None:
        log.warning("room stream skipped ahead", extra={"room_id": self.room_id, "last_seq": last_seq})
        self.last_seq = max(self.last_seq, last_seq)
        for session in tuple(self._members):
            session.offer_reload(self.last_seq)

    def _reject_holder(self, holder: SocketSession, error: grpc.aio.AioRpcError) -> None:
        self.discard(holder)
        holder.reject(error)

    async def _run(self) -> None:
        backoff = Backoff()
        subscribed = False
        messaging = self._backends.messaging
        while True:
            holder = self._token_holder()
            if holder is None:
                return
            metadata = auth_metadata(holder.token)
            try:
                if not self.ready:
                    page = await messaging.ListMessages(
                        messaging_pb2.ListMessagesRequest(room_id=self.room_id, limit=1),
                        metadata=metadata,
                        timeout=self._backends.timeout,
                    )
                    self._go_ready(page.last_seq)
                if subscribed:
                    RESUBSCRIBES.inc()
                subscribed = True
                call = self._backends.messaging_streams.Subscribe(
                    messaging_pb2.SubscribeRequest(room_id=self.room_id, after_seq=self.last_seq),
                    metadata=metadata,
                )
                async for event in call:
                    backoff.reset()
                    kind = event.WhichOneof("event")
                    if kind == "message":
                        self._dispatch_one(event.message)
                    elif kind == "batch":
                        # A group commit's entries: each encoded once and queued on every socket in
                        # this one pass, then each socket's frames go out in one write.
                        for message in event.batch.messages:
                            self._dispatch(message)
                        self._flush()
                    elif kind == "reload":
                        self._reload(event.reload.last_seq)
                    elif kind == "signal":
                        self._signal(event.signal)
                log.info("room stream ended, resubscribing", extra={"room_id": self.room_id})
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    # That socket's token no longer opens the room; drop it and go on with another.
                    self._reject_holder(holder, exc)
                    continue
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    for session in [*self._members, *self._waiting]:
                        session.reject(exc)
                    return
                log.warning(
                    "room stream failed",
                    extra={"room_id": self.room_id, "grpc_code": exc.code().name, "details": exc.details()},
                )
            except Exception:
                log.exception("room channel error", extra={"room_id": self.room_id})
            await asyncio.sleep(backoff.next())


class RoomHub:
    """The room channels of this process, ref-counted by their sockets, which it also counts for
    presence."""

    def __init__(
        self, backends: Backends, *, public_url: str, presence: PresenceReporter | None = None
    ) -> None:
        self._backends = backends
        self._public_url = public_url
        self._presence = presence
        self._channels: dict[str, RoomChannel] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    def channel(self, room_id: str) -> RoomChannel | None:
        return self._channels.get(room_id)

    def attach(self, session: SocketSession) -> RoomChannel:
        if self._presence is not None:
            self._presence.opened(session.room_id, session.principal.participant_id)
        channel = self._channels.get(session.room_id)
        if channel is None or not channel.alive:
            if channel is None:
                ROOM_SUBSCRIPTIONS.inc()
            # A channel whose stream gave up (room gone) is replaced, never joined.
            channel = RoomChannel(session.room_id, self._backends, self._public_url)
            self._channels[session.room_id] = channel
            channel.add(session)
            channel.start()
        else:
            channel.add(session)
        return channel

    def detach(self, session: SocketSession) -> None:
        if self._presence is not None:
            self._presence.closed(session.room_id, session.principal.participant_id)
        channel = self._channels.get(session.room_id)
        if channel is None:
            return
        channel.discard(session)
        if channel.empty:
            del self._channels[session.room_id]
            ROOM_SUBSCRIPTIONS.dec()
            task = channel.cancel()
            if task is not None and not task.done():
                self._stopping.add(task)
                task.add_done_callback(self._stopping.discard)

    async def close(self) -> None:
        tasks = [task for channel in self._channels.values() if (task := channel.cancel()) is not None]
        tasks.extend(self._stopping)
        ROOM_SUBSCRIPTIONS.dec(len(self._channels))
        self._channels.clear()
        await asyncio.gather(*tasks, return_exceptions=True)
