"""MessagingService: sending, history, resume and live subscription."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import TypeVar

import grpc
from opentelemetry import propagate, trace
from opentelemetry.context import Context

from chatpop.messaging.v1 import messaging_pb2, messaging_pb2_grpc
from chatpop.rooms.v1 import rooms_pb2
from chatpop_common.auth import Principal, bearer_from_metadata, require_principal
from chatpop_common.clients import bearer
from chatpop_common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from chatpop_common.interceptors import UNAVAILABLE_MESSAGE
from chatpop_common.service_auth import require_service
from chatpop_common.transient import is_transient
from chatpop_messaging import audit, keys, media, validation
from chatpop_messaging.bans import BanEntries, ban_id
from chatpop_messaging.deletions import Deletions, Redactions
from chatpop_messaging.erasure import RoomEraser
from chatpop_messaging.fanout import SIGNAL_SEQ, Fanout, carried, responses
from chatpop_messaging.forgetting import Forgetting, forgotten_participants
from chatpop_messaging.group_commit import (
    OVERLOAD_RETRY_AFTER_MS,
    Committed,
    GroupCommitter,
    PendingSend,
    PublishQueue,
    overloaded,
    shared_span,
)
from chatpop_messaging.hotcache import HotCache
from chatpop_messaging.inspection import RoomInspection
from chatpop_messaging.media import MediaRecords
from chatpop_messaging.media_purge import MediaSweeper
from chatpop_messaging.metrics import GAP_FILLS, RESUME_READS
from chatpop_messaging.mutes import Mutes, muted_target
from chatpop_messaging.paid_pins import PaidPins, TipOrder, pin_order
from chatpop_messaging.participants import ParticipantDirectory
from chatpop_messaging.pins import Pins
from chatpop_messaging.policies import RoomPolicies, RoomPolicy
from chatpop_messaging.ratelimit import SendChecks, SendRateLimiter, SendToCheck
from chatpop_messaging.reactions import Reactions, valid_emoji
from chatpop_messaging.reader import MessageReader
from chatpop_messaging.reads import MAX_ACTIVITY_ROOMS, ReadPositions
from chatpop_messaging.reencrypt import Reencryption
from chatpop_messaging.reports import Reports, valid_report
from chatpop_messaging.retention import Retention, floor_seq
from chatpop_messaging.room_signals import RoomSignals
from chatpop_messaging.send_streams import SendStreams
from chatpop_messaging.settings import MessagingSettings
from chatpop_messaging.stats import MessagingStats
from chatpop_messaging.store import (
    Actor,
    MessageStore,
    NewMessage,
    carried_messages,
    is_message,
    is_shown,
)

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

T = TypeVar("T")

# Sends one SendMessages call may carry.
MAX_BATCHED_SENDS = 1000
# Seconds kept from a call's deadline to answer it after the last retry of a passing failure.
_ANSWER_MARGIN = 0.2
# gRPC statuses a client may retry a send after (as the edge maps them).
_RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED}
)

# Messages read per round trip while a stream catches up.
_CATCH_UP_CHUNK = 200
# A history page reads back at least this many entries a round trip, and at most the budget in all
# (a run of changes with no message between them ends a page early rather than scanning forever).
_PAGE_WINDOW_MIN = 50
_PAGE_SCAN_BUDGET = 2000
# Most older messages a page brings the state of (a page stops early rather than bring more).
_TOUCHED_MAX = 500


_RESOLUTIONS = {
    messaging_pb2.REPORT_RESOLUTION_RESTORE: "restore",
    messaging_pb2.REPORT_RESOLUTION_DELETE: "delete",
    messaging_pb2.REPORT_RESOLUTION_DISMISS: "dismiss",
}


def _reload(last_seq: int) -> messaging_pb2.SubscribeResponse:
    return messaging_pb2.SubscribeResponse(reload=messaging_pb2.Reload(last_seq=last_seq))


class MessagingServicer(messaging_pb2_grpc.MessagingServiceServicer):
    def __init__(
        self,
        settings: MessagingSettings,
        *,
        store: MessageStore,
        reader: MessageReader,
        cache: HotCache,
        limiter: SendRateLimiter,
        checks: SendChecks,
        committer: GroupCommitter,
        publisher: PublishQueue,
        participants: ParticipantDirectory,
        policies: RoomPolicies,
        reads: ReadPositions,
        fanout: Fanout,
        signals: RoomSignals,
        reactions: Reactions,
        bans: BanEntries,
        deletions: Deletions,
        redactions: Redactions,
        pins: Pins,
        paid_pins: PaidPins,
        reports: Reports,
        mutes: Mutes,
        stats: MessagingStats,
        media_records: MediaRecords,
        media_sweeper: MediaSweeper,
        media_enabled: bool,
        eraser: RoomEraser,
        forgetting: Forgetting,
        retention: Retention,
        inspection: RoomInspection,
        reencryption: Reencryption,
    ) -> None:
        self._settings = settings
        self._send_streams = SendStreams()
        self._store = store
        self._reader = reader
        self._cache = cache
        self._limiter = limiter
        self._checks = checks
        self._committer = committer
        self._publisher = publisher
        self._participants = participants
        self._policies = policies
        self._reads = reads
        self._fanout = fanout
        self._signals = signals
        self._reactions = reactions
        self._bans = bans
        self._deletions = deletions
        self._redactions = redactions
        self._pins = pins
        self._paid_pins = paid_pins
        self._reports = reports
        self._mutes = mutes
        self._stats = stats
        self._media = media_records
        self._media_sweeper = media_sweeper
        self._media_enabled = media_enabled
        self._eraser = eraser
        self._forgetting = forgetting
        self._retention = retention
        self._inspection = inspection
        self._reencryption = reencryption

    async def SendMessage(
        self, request: messaging_pb2.SendMessageRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.SendMessageResponse:
        principal = require_principal().require_room(request.room_id)
        if not self._committer.admit(1):
            raise overloaded()
        try:
            token = bearer_from_metadata(context.invocation_metadata())
            participant = await self._participants.authorize_writer(principal, bearer(token) if token else ())
            committed = await self._send(
                principal, participant, request, self._deadline(context.time_remaining())
            )
        finally:
            self._committer.release(1)
        return messaging_pb2.SendMessageResponse(message=committed.message, created=committed.created)

    async def _send(
        self,
        principal: Principal,
        participant: rooms_pb2.Participant,
        request: messaging_pb2.SendMessageRequest,
        deadline: float,
    ) -> Committed:
        """One send, checked one round trip at a time, then committed with its room's next group."""
        room_id, sender_id = principal.room_id, principal.participant_id
        client_msg_id = validation.client_msg_id(request.client_msg_id)
        policy = await self._policies.get(room_id)
        try:
            new = self._new_message(principal, participant, request, client_msg_id, policy)
            reply_to_seq = request.reply_to_seq
            if reply_to_seq != 0 and (
                reply_to_seq < 0 or not await self._store.seq_exists(room_id, reply_to_seq)
            ):
                raise _reply_target_not_found()
            if policy.closed:
                raise _room_closed()
            slow = 0 if participant.is_host else policy.slow_mode_seconds
            (refusal,) = await self._checks.check([SendToCheck(room_id, sender_id, client_msg_id, slow)])
            if refusal is not None:
                raise refusal
        except ServiceError:
            # A retry is answered with the original even when its text differs or the sender is
            # rate limited by now. Looked up only here: on the common path the group commit finds
            # retries in the same statement that stores the new messages.
            original = await self._store.find_by_client_msg_id(room_id, sender_id, client_msg_id)
            if original is not None:
                return Committed(original, False)
            raise
        pending = PendingSend(new, deadline, trace.get_current_span().get_span_context())
        self._committer.submit([pending])
        try:
            return await asyncio.shield(pending.future)
        except ServiceError:
            raise
        except Exception as exc:
            if is_transient(exc):
                # Retried until the deadline already: the caller tries again later.
                raise Unavailable(UNAVAILABLE_MESSAGE, code="service_unavailable", retry_after=1) from exc
            raise

    def _new_message(
        self,
        principal: Principal,
        participant: rooms_pb2.Participant,
        request: messaging_pb2.SendMessageRequest,
        client_msg_id: str,
        policy: RoomPolicy,
    ) -> NewMessage:
        """The message a send asks for, its text and media reference validated."""
        media_ref: uuid.UUID | None = None
        if request.media_id:
            media_ref = media.media_id(request.media_id, code="media_reference_invalid")
        # A message that carries media may say nothing.
        text = (
            validation.message_text(request.text, self._settings.message_max_chars)
            if media_ref is None or request.text.strip()
            else ""
        )
        return NewMessage(
            room_id=principal.room_id,
            sender_participant_id=principal.participant_id,
            sender_username=participant.username,
            sender_is_host=participant.is_host,
            sender_verified=participant.verified,
            client_msg_id=client_msg_id,
            text=text,
            reply_to_seq=request.reply_to_seq,
            media_id=media_ref,
            media_kinds=policy.media_kinds,
        )

    def _deadline(self, remaining: float | None) -> float:
        """Loop time until which a passing datastore failure of a send is retried, given the seconds
        the caller still waits for the answer (None: as long as it takes)."""
        budget = self._settings.transient_retry_seconds
        if remaining is not None:
            budget = min(budget, remaining - _ANSWER_MARGIN)
        return asyncio.get_running_loop().time() + budget

    async def SendMessages(
        self, request: messaging_pb2.SendMessagesRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.SendMessagesResponse:
        require_service("edge")
        return await self._answer_sends(request.sends, self._deadline(context.time_remaining()))

    async def SendStream(
        self,
        request_iterator: AsyncIterator[messaging_pb2.SendStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[messaging_pb2.SendStreamResponse]:
        require_service("edge")
        async for response in self._send_streams.serve(request_iterator, self._answer_streamed, _send_error):
            yield response

    def drain_send_streams(self) -> None:
        """Shutdown begins: the edges move their sends to other messaging processes."""
        self._send_streams.drain()

    async def _answer_streamed(
        self, request: messaging_pb2.SendStreamRequest
    ) -> list[messaging_pb2.SendResult]:
        """One batch of a SendStream, answered as SendMessages would."""
        remaining = request.timeout_ms / 1000 if request.timeout_ms else None
        return list((await self._answer_sends(request.sends, self._deadline(remaining))).results)

    async def _answer_sends(
        self, sends: Sequence[messaging_pb2.BatchedSend], deadline: float
    ) -> messaging_pb2.SendMessagesResponse:
        total = len(sends)
        if not 1 <= total <= MAX_BATCHED_SENDS:
            raise InvalidArgument(
                f"Send 1-{MAX_BATCHED_SENDS} messages at a time.", code="invalid_batch_size"
            )
        admitted = self._committer.admit(total)
        # Each send handled as SendMessage would have been, in the trace of the edge's send.
        batch = trace.get_current_span().get_span_context()
        spans = [_send_span(send, batch) for send in sends]
        answers: list[Committed | BaseException | None] = [None] * total
        answered_at: list[int | None] = [None] * total
        refused_at = time.time_ns()
        for index in range(admitted, total):
            answers[index] = overloaded()
            answered_at[index] = refused_at
        try:
            await self._send_batch(
                list(sends[:admitted]),
                spans[:admitted],
                answers,
                answered_at,
                deadline,
            )
        except BaseException as exc:
            # The whole call fails (cancelled, a bug): so did each send.
            for span in spans:
                span.record_exception(exc)
                span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
                span.end()
            raise
        finally:
            self._committer.release(admitted)
        response = messaging_pb2.SendMessagesResponse()
        for answer, span, ended in zip(answers, spans, answered_at, strict=True):
            result = response.results.add()
            if isinstance(answer, Committed):
                result.sent.message.CopyFrom(answer.message)
                result.sent.created = answer.created
                span.set_attribute("chatpop.seq", answer.message.seq)
                span.set_attribute("rpc.grpc.status_code", grpc.StatusCode.OK.value[0])
            else:
                result.error.CopyFrom(_send_error(answer))
                span.set_attribute("chatpop.error_code", result.error.code)
                span.set_attribute("rpc.grpc.status_code", result.error.status)
                if result.error.status in _SERVER_FAULTS:
                    span.set_status(trace.StatusCode.ERROR, result.error.code)
            span.end(end_time=ended)
        return response

    async def _send_batch(
        self,
        sends: list[messaging_pb2.BatchedSend],
        spans: Sequence[trace.Span],
        answers: list[Committed | BaseException | None],
        answered_at: list[int | None],
        deadline: float,
    ) -> None:
        """Check and commit sends of any rooms, answering each in `answers` (same index) and noting
        when in `answered_at`, with the round trips shared: participants and room policies from the
        caches (the misses looked up concurrently), reply targets one read per room, rate limits and
        slow mode one Redis round trip, then the sends of each room in its next group commit.

        A lookup made for sends is traced in the span of the first of them (`spans`, same index);
        the Redis round trip and the commits, shared, in spans linked to every send's."""
        principals: list[Principal | None] = [None] * len(sends)
        for index, batched in enumerate(sends):
            try:
                principals[index] = Principal(
                    subject="",
                    kind="",
                    token_type="room",
                    room_id=validation.room_id(batched.send.room_id),
                    participant_id=validation.participant_id(batched.participant_id),
                    version=batched.token_version,
                )
            except ServiceError as exc:
                answers[index] = exc
        # Participants: from the cache.
        writers: dict[tuple[str, str, int], rooms_pb2.Participant | BaseException] = {}
        misses: dict[tuple[str, str, int], tuple[Principal, trace.Span]] = {}
        rooms: dict[str, trace.Span] = {}
        for principal, span in zip(principals, spans, strict=True):
            if principal is None:
                continue
            rooms.setdefault(principal.room_id, span)
            key = (principal.room_id, principal.participant_id, principal.version)
            if key in writers or key in misses:
                continue
            cached = self._participants.cached(principal)
            if cached is None:
                misses[key] = (principal, span)
            else:
                writers[key] = cached
        # Room policies: from the cache (no task per room when it holds them).
        policies: dict[str, RoomPolicy | BaseException] = {}
        uncached: dict[str, trace.Span] = {}
        for room, span in rooms.items():
            known = self._policies.cached(room)
            if known is None:
                uncached[room] = span
            else:
                policies[room] = known
        # The misses of both asked of rooms at the same time (the participants in one call).
        if misses or uncached:
            authorize = self._participants.authorize_writer
            looked_up, got = await asyncio.gather(
                asyncio.gather(
                    *(_in_span(span, authorize(p, ())) for p, span in misses.values()),
                    return_exceptions=True,
                ),
                asyncio.gather(
                    *(_in_span(span, self._policies.get(r)) for r, span in uncached.items()),
                    return_exceptions=True,
                ),
            )
            writers.update(zip(misses, looked_up, strict=True))
            policies.update(zip(uncached, got, strict=True))

        # The checks SendMessage makes; a send refused by those after the client_msg_id's may be a
        # retry, answered with its original as there.
        prepared: dict[int, tuple[NewMessage, rooms_pb2.Participant, RoomPolicy]] = {}
        recheck: list[int] = []
        for index, (batched, principal) in enumerate(zip(sends, principals, strict=True)):
            if principal is None:
                continue
            try:
                found = writers[(principal.room_id, principal.participant_id, principal.version)]
                if isinstance(found, BaseException):
                    raise found
                participant = self._participants.check_writer(principal, found)
                client_msg_id = validation.client_msg_id(batched.send.client_msg_id)
                policy = policies[principal.room_id]
                if isinstance(policy, BaseException):
                    raise policy
            except Exception as exc:
                answers[index] = exc
                continue
            try:
                new = self._new_message(principal, participant, batched.send, client_msg_id, policy)
                if new.reply_to_seq < 0:
                    raise _reply_target_not_found()
                if policy.closed:
                    raise _room_closed()
            except ServiceError as exc:
                answers[index] = exc
                recheck.append(index)
                continue
            prepared[index] = (new, participant, policy)

        # Reply targets: one read per room.
        wanted: dict[str, set[int]] = {}
        for new, _, _ in prepared.values():
            if new.reply_to_seq:
                wanted.setdefault(new.room_id, set()).add(new.reply_to_seq)
        if wanted:
            reads = await asyncio.gather(
                *(self._store.existing_seqs(r, list(seqs)) for r, seqs in wanted.items())
            )
            existing = dict(zip(wanted, reads, strict=True))
            for index, (new, _, _) in list(prepared.items()):
                if new.reply_to_seq and new.reply_to_seq not in existing[new.room_id]:
                    answers[index] = _reply_target_not_found()
                    recheck.append(index)
                    del prepared[index]

        # Rate limits and slow mode of every send left: one Redis round trip.
        order = sorted(prepared)
        to_check = []
        for index in order:
            new, participant, policy = prepared[index]
            slow = 0 if participant.is_host else policy.slow_mode_seconds
            to_check.append(SendToCheck(new.room_id, new.sender_participant_id, new.client_msg_id, slow))
        if to_check:
            served = [spans[index].get_span_context() for index in order]
            with shared_span("messaging.check_sends", served, {}):
                refusals = await self._checks.check(to_check)
        else:
            refusals = []
        for index, refusal in zip(order, refusals, strict=True):
            if refusal is not None:
                answers[index] = refusal
                recheck.append(index)
                del prepared[index]

        if recheck:
            await self._originals(principals, [(i, sends[i].send.client_msg_id) for i in recheck], answers)

        checked_at = time.time_ns()
        for index in range(len(sends)):
            if index not in prepared:
                answered_at[index] = checked_at
        pending = [
            (index, PendingSend(prepared[index][0], deadline, spans[index].get_span_context()))
            for index in sorted(prepared)
        ]
        self._committer.submit([send for _, send in pending])
        for index, send in pending:
            send.future.add_done_callback(functools.partial(_stamp, answered_at, index))
            try:
                answers[index] = await asyncio.shield(send.future)
            except Exception as exc:
                answers[index] = exc

    async def _originals(
        self,
        principals: list[Principal | None],
        refused: list[tuple[int, str]],
        answers: list[Committed | BaseException | None],
    ) -> None:
        """Refused sends that are retries of stored messages: answered with the original."""
        by_room: dict[str, list[tuple[int, tuple[str, str]]]] = {}
        for index, client_msg_id in refused:
            principal = principals[index]
            if principal is not None:
                by_room.setdefault(principal.room_id, []).append(
                    (index, (principal.participant_id, client_msg_id))
                )
        found = await asyncio.gather(
            *(
                self._store.find_by_client_msg_ids(r, [key for _, key in items])
                for r, items in by_room.items()
            ),
            return_exceptions=True,
        )
        for items, originals in zip(by_room.values(), found, strict=True):
            if isinstance(originals, BaseException):
                continue
            for index, key in items:
                original = originals.get(key)
                if original is not None:
                    answers[index] = Committed(original, False)

    async def ListMessages(
        self, request: messaging_pb2.ListMessagesRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.ListMessagesResponse:
        principal = require_principal().require_room(request.room_id)
        room_id = principal.room_id
        await self._policies.refuse_taken_down(room_id)
        limit = validation.page_limit(request.limit)
        if request.before_seq < 0:
            raise InvalidArgument("before_seq must not be negative.", code="invalid_before_seq")
        last_seq = await self._store.last_seq(room_id)
        # Retention deleted what lies below the floor: the history ends there.
        floor = await floor_seq(self._store.pool, room_id)
        high = last_seq if request.before_seq == 0 else min(request.before_seq - 1, last_seq)
        # The caller's muted participants' messages are left out, their seqs still accounted for.
        muted = await self._mutes.muted_ids(room_id, principal.participant_id)
        # Changes sit between messages in the log: read further back until the page has `limit`
        # messages, the log's start, or the scan budget; the page says how far back it accounted for.
        found: list[messaging_pb2.Message] = []
        targets: set[int] = set()
        low = high + 1
        scanned = 0
        while (
            len(found) < limit and low > floor and scanned < _PAGE_SCAN_BUDGET and len(targets) < _TOUCHED_MAX
        ):
            window_high = low - 1
            # The first read asks for exactly what the page needs; a page that changes thinned out
            # reads further back in larger steps.
            step = limit - len(found) if scanned == 0 else max(limit - len(found), _PAGE_WINDOW_MIN)
            window_low = max(floor, window_high - step + 1)
            entries = await self._reader.read_range(room_id, window_low, window_high, newest=last_seq)
            scanned += window_high - window_low + 1
            targets.update(
                entry.target_seq for entry in entries if not is_message(entry) and entry.target_seq
            )
            newer_first = [
                entry
                for entry in reversed(entries)
                if is_shown(entry) and entry.sender_participant_id not in muted
            ]
            room_left = limit - len(found)
            if len(newer_first) > room_left:
                # The page fills inside this window: it accounts down to the oldest message taken.
                found += newer_first[:room_left]
                low = found[-1].seq
                break
            found += newer_first
            if not entries or entries[0].seq != window_low:
                # Entries below this one are gone (retention is deleting them): the history ends.
                low = floor
                break
            low = window_low
        board = await self._board(room_id) if request.before_seq == 0 else None
        pinned = [pin.message for pin in board.pins] if board is not None else []
        pinned += [pin.message for pin in board.paid_pins] if board is not None else []
        # Changes in the page's range to messages older than the page: their state comes along.
        older = sorted(seq for seq in targets if floor <= seq < low)[:_TOUCHED_MAX]
        touched = [
            m for m in await self._store.messages_at(room_id, older) if m.sender_participant_id not in muted
        ]
        await self._fold_state(room_id, found + pinned + touched, principal.participant_id)
        await self._withhold_hidden(found + pinned + touched, principal, context)
        return messaging_pb2.ListMessagesResponse(
            messages=found,
            has_more=low > floor,
            last_seq=last_seq,
            low_seq=low,
            board=board,
            touched=touched,
            floor_seq=floor,
        )

    async def _board(self, room_id: str) -> messaging_pb2.RoomBoard:
        """Host pins and the sticky text, then the live paid pins below them."""
        board = await self._pins.board(room_id)
        paid, paid_state_seq = await self._paid_pins.live(room_id)
        board.paid_pins.extend(paid)
        board.paid_pins_state_seq = paid_state_seq
        return board

    async def _withhold_hidden(
        self, messages: list[messaging_pb2.Message], principal: Principal, context: grpc.aio.ServicerContext
    ) -> None:
        """Hidden messages show their text to the room's host alone."""
        hidden = [message for message in messages if message.state.hidden]
        if not hidden:
            return
        try:
            token = bearer_from_metadata(context.invocation_metadata())
            viewer = await self._participants.authorize_writer(principal, bearer(token) if token else ())
            if viewer.is_host:
                return
        except PermissionDenied:
            pass
        for message in hidden:
            message.text = ""
            message.ClearField("media")

    async def _fold_state(self, room_id: str, messages: list[messaging_pb2.Message], viewer: str) -> None:
        """Give each message its state now (deleted, reaction counts) and the viewer's own emojis."""
        states = await self._store.current_states(room_id, [m.seq for m in messages], viewer)
        for message in messages:
            found = states.get(message.seq)
            if found is None:
                continue
            state, mine = found
            message.state.CopyFrom(state)
            message.my_reactions[:] = mine
            if state.deleted:
                message.text = ""
        # The media as it is now: a cached copy may predate its purge.
        await media.fill(self._store.pool, room_id, messages)

    async def ListMessagesAfter(
        self, request: messaging_pb2.ListMessagesAfterRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.ListMessagesAfterResponse:
        principal = require_principal().require_room(request.room_id)
        room_id = principal.room_id
        await self._policies.refuse_taken_down(room_id)
        if request.after_seq < 0:
            raise InvalidArgument("after_seq must not be negative.", code="invalid_after_seq")
        if request.limit < 0:
            raise InvalidArgument("Limit must not be negative.", code="invalid_limit")
        most = self._settings.resume_max
        if request.limit > 0:
            most = min(most, request.limit)
        last_seq = await self._store.last_seq(room_id)
        floor = await floor_seq(self._store.pool, room_id)
        # Below the floor retention deleted the entries (not lost): the resume starts at the floor.
        start = max(request.after_seq + 1, floor)
        # A position beyond the room's end cannot be resumed from either: the client must reload.
        if request.after_seq > last_seq or last_seq - start + 1 > most:
            RESUME_READS.labels("reload").inc()
            return messaging_pb2.ListMessagesAfterResponse(reload=True, last_seq=last_seq, floor_seq=floor)
        if start > last_seq:
            RESUME_READS.labels("nothing_missed").inc()
            return messaging_pb2.ListMessagesAfterResponse(last_seq=last_seq, floor_seq=floor)
        messages = await self._reader.read_range(room_id, start, last_seq, newest=last_seq, resume=True)
        # Messages (and pinned copies) come with their state now: a message hidden or deleted since it
        # was sent reaches a resuming client without its text. The changes that follow carry lower
        # state_seqs than that state, so clients keep it.
        shown = [m for m in messages if is_message(m)]
        shown += [copy for m in messages for copy in carried_messages(m)]
        await self._fold_state(room_id, shown, principal.participant_id)
        await self._withhold_hidden(shown, principal, context)
        return messaging_pb2.ListMessagesAfterResponse(messages=messages, last_seq=last_seq, floor_seq=floor)

    async def Subscribe(
        self, request: messaging_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[messaging_pb2.SubscribeResponse]:
        room_id = validation.room_id(request.room_id)
        after_seq = request.after_seq
        if after_seq < -1:
            raise InvalidArgument(
                "after_seq must be -1 (only new messages) or more.", code="invalid_after_seq"
            )
        # Join before reading the position, so nothing committed from here on can slip past.
        subscription = self._fanout.join(room_id)
        # A room being watched will be written to: its first message need not wait for its key.
        keys.keyring().warm(room_id)
        try:
            last_seq = await self._store.last_seq(room_id)
            floor = await floor_seq(self._store.pool, room_id) if after_seq >= 0 else 0
            if after_seq == -1:
                sent = last_seq
            elif after_seq > last_seq or last_seq - max(after_seq, floor - 1) > self._settings.resume_max:
                yield _reload(last_seq)
                return
            else:
                sent = after_seq
                if sent + 1 < floor:
                    # Retention deleted the entries before the floor: said first, never a loss.
                    yield messaging_pb2.SubscribeResponse(trimmed=messaging_pb2.Trimmed(floor_seq=floor))
                    sent = floor - 1
                async for response in self._catch_up(room_id, sent + 1, last_seq):
                    yield response
                sent = last_seq
            # A hub that was just starting may have read the room's position after this stream did,
            # and it never delivers what lies at or below its own position: fetch that stretch here.
            await subscription.hub.positioned.wait()
            hub_last = subscription.hub.last or 0
            if hub_last > sent:
                GAP_FILLS.labels("subscriber").inc()
                async for response in self._catch_up(room_id, sent + 1, hub_last):
                    yield response
                sent = hub_last
            while True:
                delivery = await subscription.next()
                if delivery is None:
                    yield _reload(max(sent, subscription.hub.last or 0))
                    return
                seq, response = delivery
                if seq == SIGNAL_SEQ:
                    yield response
                    continue
                # A `message`, or a `batch` of consecutive entries from `seq` on.
                entries = carried(response)
                last = entries[-1].seq
                if last <= sent:
                    continue
                if seq > sent + 1:
                    GAP_FILLS.labels("subscriber").inc()
                    async for caught_up in self._catch_up(room_id, sent + 1, seq - 1):
                        yield caught_up
                elif seq <= sent:
                    # Partly sent already (by a catch-up): only the rest.
                    (response,) = responses([entry for entry in entries if entry.seq > sent])
                yield response
                sent = last
        finally:
            self._fanout.leave(subscription)

    async def MarkRead(
        self, request: messaging_pb2.MarkReadRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.MarkReadResponse:
        principal = require_principal().require_room(request.room_id)
        if request.seq < 0:
            raise InvalidArgument("seq must not be negative.", code="invalid_seq")
        read_seq = await self._reads.mark(principal.room_id, principal.participant_id, request.seq)
        return messaging_pb2.MarkReadResponse(read_seq=read_seq)

    async def GetRoomActivity(
        self, request: messaging_pb2.GetRoomActivityRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.GetRoomActivityResponse:
        if len(request.participants) > MAX_ACTIVITY_ROOMS:
            raise InvalidArgument(
                f"Ask about at most {MAX_ACTIVITY_ROOMS} rooms at a time.", code="too_many_rooms"
            )
        refs = [
            # A host who never joined has no participant: everything in the room is unread to them.
            (
                validation.room_id(ref.room_id),
                validation.participant_id(ref.participant_id) if ref.participant_id else "",
            )
            for ref in request.participants
        ]
        response = messaging_pb2.GetRoomActivityResponse()
        for found in await self._reads.activity(refs):
            activity = response.activities.add(
                room_id=found.room_id,
                participant_id=found.participant_id,
                last_seq=found.last_seq,
                read_seq=found.read_seq,
                unread=found.unread,
            )
            if found.last_message_at is not None:
                activity.last_message_at.FromDatetime(found.last_message_at)
        return response

    async def _catch_up(
        self, room_id: str, low: int, high: int
    ) -> AsyncIterator[messaging_pb2.SubscribeResponse]:
        """Entries low..high from the log as Subscribe responses, a batch per chunk read."""
        for start in range(low, high + 1, _CATCH_UP_CHUNK):
            end = min(high, start + _CATCH_UP_CHUNK - 1)
            entries = await self._reader.read_range(room_id, start, end, newest=high)
            # A stream serves a whole room, host included: messages come in their state now, and a
            # hidden one without its text (the host reads it in history and the reports queue).
            shown = [m for m in entries if is_message(m)]
            shown += [copy for m in entries for copy in carried_messages(m)]
            await self._fold_state(room_id, shown, viewer="")
            for message in shown:
                if message.state.hidden:
                    message.text = ""
                    message.ClearField("media")
            for response in responses(entries):
                yield response

    # --- changes to what the room shows (reactions.py, deletions.py) --------------------------------

    async def _actor(self, room_id: str, context: grpc.aio.ServicerContext) -> Actor:
        principal = require_principal().require_room(room_id)
        token = bearer_from_metadata(context.invocation_metadata())
        participant = await self._participants.authorize_writer(principal, bearer(token) if token else ())
        return Actor(
            participant_id=principal.participant_id,
            username=participant.username,
            is_host=participant.is_host,
            verified=participant.verified,
        )

    def _publish_committed(self, *entries: messaging_pb2.Message) -> asyncio.Future[None]:
        # The change is committed: publishing finishes even if the caller goes away now (the queue
        # publishes in commit order, with whatever else is waiting, in one Redis round trip).
        return self._publisher.publish(sorted(entries, key=lambda entry: entry.seq))

    async def SetReaction(
        self, request: messaging_pb2.SetReactionRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.SetReactionResponse:
        actor = await self._actor(request.room_id, context)
        room_id = request.room_id
        emoji = valid_emoji(request.emoji)
        target_seq = validation.target_seq(request.target_seq)
        policy = await self._policies.get(room_id)
        if policy.closed:
            raise FailedPrecondition("This room is closed.", code="room_closed")
        await self._limiter.check(room_id, actor.participant_id)
        result = await self._reactions.set(room_id, target_seq, actor, emoji, request.on)
        if result.entry is not None:
            await asyncio.shield(self._publish_committed(result.entry))
        return messaging_pb2.SetReactionResponse(
            entry=result.entry,
            changed=result.entry is not None,
            state=result.state,
            my_reactions=result.mine,
        )

    async def DeleteMessage(
        self, request: messaging_pb2.DeleteMessageRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.DeleteMessageResponse:
        actor = await self._actor(request.room_id, context)
        target_seq = validation.target_seq(request.target_seq)
        result = await self._deletions.delete(request.room_id, target_seq, actor)
        if result.entry is None or result.tombstone is None:
            return messaging_pb2.DeleteMessageResponse(changed=False)
        for redacted in (result.tombstone, *result.redacted):
            self._redactions.redact(redacted)
        await asyncio.shield(self._publish_committed(*result.entries))
        return messaging_pb2.DeleteMessageResponse(entry=result.entry, changed=True)

    # --- what the room shows above its messages (pins.py) ------------------------------------------

    async def _host(self, room_id: str, context: grpc.aio.ServicerContext) -> Actor:
        actor = await self._actor(room_id, context)
        if not actor.is_host:
            raise PermissionDenied("Only the room's host can do this.", code="forbidden")
        policy = await self._policies.get(room_id)
        if policy.closed:
            raise FailedPrecondition("This room is closed.", code="room_closed")
        return actor

    async def SetPin(
        self, request: messaging_pb2.SetPinRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.SetPinResponse:
        actor = await self._host(request.room_id, context)
        target_seq = validation.target_seq(request.target_seq)
        result = await self._pins.set(request.room_id, target_seq, actor, request.pinned)
        if result.entry is not None:
            await asyncio.shield(self._publish_committed(result.entry))
        return messaging_pb2.SetPinResponse(
            entry=result.entry,
            changed=result.entry is not None,
            pinned_seqs=result.pinned_seqs,
            pins_state_seq=result.pins_state_seq,
        )

    async def SetSticky(
        self, request: messaging_pb2.SetStickyRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.SetStickyResponse:
        actor = await self._host(request.room_id, context)
        text = request.text.strip()
        if text:
            text = validation.message_text(text, self._settings.message_max_chars)
        result = await self._pins.set_sticky(request.room_id, actor, text)
        if result.entry is not None:
            await asyncio.shield(self._publish_committed(result.entry))
        return messaging_pb2.SetStickyResponse(
            entry=result.entry,
            changed=result.entry is not None,
            text=result.text,
            sticky_seq=result.sticky_seq,
        )

    # --- reports and hidden messages (reports.py) ---------------------------------------------------

    async def ReportMessage(
        self, request: messaging_pb2.ReportMessageRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.ReportMessageResponse:
        actor = await self._actor(request.room_id, context)
        target_seq = validation.target_seq(request.target_seq)
        text = valid_report(request.reason, request.text)
        await self._limiter.check(request.room_id, actor.participant_id)
        result = await self._reports.report(request.room_id, target_seq, actor, request.reason, text)
        if result.entry is not None:
            await asyncio.shield(self._publish_committed(result.entry))
        return messaging_pb2.ReportMessageResponse(
            created=result.created, entry=result.entry, hidden=result.hidden
        )

    async def ListReports(
        self, request: messaging_pb2.ListReportsRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.ListReportsResponse:
        actor = await self._actor(request.room_id, context)
        if not actor.is_host:
            raise PermissionDenied("Only the room's host can do this.", code="forbidden")
        if request.before_seq < 0:
            raise InvalidArgument("before_seq must not be negative.", code="invalid_before_seq")
        queue = await self._reports.queue(
            request.room_id, request.before_seq, validation.page_limit(request.limit)
        )
        await self._fold_state(request.room_id, [item.message for item in queue.items], actor.participant_id)
        return queue

    async def ResolveReports(
        self, request: messaging_pb2.ResolveReportsRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.ResolveReportsResponse:
        actor = await self._host(request.room_id, context)
        room_id, target_seq = request.room_id, validation.target_seq(request.target_seq)
        resolution = _RESOLUTIONS.get(request.resolution)
        if resolution is None:
            raise InvalidArgument(
                "The resolution must be restore, delete or dismiss.", code="invalid_resolution"
            )
        # The audit event is written with the reports' closing, in its transaction.
        on_resolved = audit.on_resolved(
            room_id,
            target_seq,
            resolution,
            host=require_principal().subject,
            host_participant=actor.participant_id,
        )
        entries: list[messaging_pb2.Message] = []
        if request.resolution == messaging_pb2.REPORT_RESOLUTION_RESTORE:
            restored, closed = await self._reports.restore(
                room_id, target_seq, actor, on_resolved=on_resolved
            )
            entries += [restored] if restored is not None else []
        elif request.resolution == messaging_pb2.REPORT_RESOLUTION_DELETE:
            deleted = await self._deletions.delete(room_id, target_seq, actor)
            if deleted.tombstone is not None:
                for redacted in (deleted.tombstone, *deleted.redacted):
                    self._redactions.redact(redacted)
            entries += deleted.entries
            closed = await self._reports.close(
                room_id, target_seq, changed=deleted.entry is not None, on_resolved=on_resolved
            )
        else:
            closed = await self._reports.close(room_id, target_seq, on_resolved=on_resolved)
        if entries:
            await asyncio.shield(self._publish_committed(*entries))
        return messaging_pb2.ResolveReportsResponse(entries=entries, closed=closed)

    async def AppendBan(
        self, request: messaging_pb2.AppendBanRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.AppendBanResponse:
        room_id = validation.room_id(request.room_id)
        participant_id = validation.participant_id(request.participant_id)
        result = await self._bans.append(require_principal(), room_id, participant_id, ban_id(request.ban_id))
        # What this process cached about the participant may say "not banned": ask rooms next time.
        self._participants.forget(room_id, participant_id)
        if result.created:
            await asyncio.shield(self._publish_committed(result.entry, *result.followups))
        return messaging_pb2.AppendBanResponse(entry=result.entry, created=result.created)

    # --- paid pins and tips (paid_pins.py) ----------------------------------------------------------

    async def GetPaidPinQuote(
        self, request: messaging_pb2.GetPaidPinQuoteRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.GetPaidPinQuoteResponse:
        room_id = validation.room_id(request.room_id)
        principal = require_principal()
        if principal.token_type == "room":
            participant_id = principal.require_room(room_id).participant_id
            await self._policies.refuse_taken_down(room_id)
        else:
            require_service("payments")
            participant_id = ""
        quote = await self._paid_pins.quote(room_id, participant_id)
        copies = [pin.message for pin in quote.paid_pins]
        await self._fold_state(room_id, copies, participant_id)
        for message in copies:
            if message.state.hidden:
                message.text = ""
                message.ClearField("media")
        return quote

    async def _buyer(self, room_id: str, participant_id: str) -> tuple[Actor, bool]:
        """Who pays, as rooms has them now, and whether they are banned from the room."""
        participant = await self._participants.current(room_id, participant_id)
        actor = Actor(
            participant_id=participant.id or participant_id,
            username=participant.username,
            is_host=participant.is_host,
            verified=participant.verified,
        )
        return actor, participant.banned

    async def ApplyPaidPin(
        self, request: messaging_pb2.ApplyPaidPinRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.ApplyPaidPinResponse:
        require_service("payments")
        order_id = validation.order_id(request.order_id)
        room_id = validation.room_id(request.room_id)
        order = pin_order(
            request,
            order_id,
            room_id,
            validation.participant_id(request.participant_id),
            validation.currency(request.currency),
        )
        first = await self._paid_pins.recorded(room_id, order_id)
        if first is None:
            # Read before rooms is asked: a ban appended after this seq counts even if rooms said no.
            seen_seq = await self._store.last_seq(room_id)
            buyer, banned = await self._buyer(room_id, order.participant_id)
            first = await self._paid_pins.apply(order, buyer, banned=banned, seen_seq=seen_seq)
            if first.created and first.entry is not None:
                await asyncio.shield(self._publish_committed(first.entry))
        return messaging_pb2.ApplyPaidPinResponse(
            outcome=first.outcome, entry=first.entry, pin=first.pin, created=first.created
        )

    async def ApplyTip(
        self, request: messaging_pb2.ApplyTipRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.ApplyTipResponse:
        require_service("payments")
        if request.amount_cents <= 0:
            raise InvalidArgument("amount_cents must be positive.", code="invalid_amount")
        order = TipOrder(
            order_id=validation.order_id(request.order_id),
            room_id=validation.room_id(request.room_id),
            participant_id=validation.participant_id(request.participant_id),
            amount_cents=request.amount_cents,
            currency=validation.currency(request.currency),
            note=validation.tip_note(request.note),
        )
        posted = await self._paid_pins.recorded_tip(order.room_id, order.order_id)
        if posted is not None:
            return messaging_pb2.ApplyTipResponse(entry=posted, created=False)
        tipper, _banned = await self._buyer(order.room_id, order.participant_id)
        entry, created = await self._paid_pins.tip(order, tipper)
        if created:
            await asyncio.shield(self._publish_committed(entry))
        return messaging_pb2.ApplyTipResponse(entry=entry, created=created)

    async def RemovePaidPin(
        self, request: messaging_pb2.RemovePaidPinRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.RemovePaidPinResponse:
        room_id = validation.room_id(request.room_id)
        principal = require_principal()
        if not (principal.token_type == "access" and principal.is_admin):
            actor = await self._actor(room_id, context)
            if not actor.is_host:
                raise PermissionDenied("Only the room's host can take a paid pin down.", code="forbidden")
        pin_id = validation.order_id(request.pin_id, field="pin_id")
        entry = await self._paid_pins.remove(room_id, pin_id)
        if entry is not None:
            await asyncio.shield(self._publish_committed(entry))
        return messaging_pb2.RemovePaidPinResponse(entry=entry, changed=entry is not None)

    # --- personal mutes (mutes.py) -----------------------------------------------------------------

    async def MuteParticipant(
        self, request: messaging_pb2.MuteParticipantRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.MuteParticipantResponse:
        actor = await self._actor(request.room_id, context)
        target = muted_target(require_principal(), request.participant_id)
        token = bearer_from_metadata(context.invocation_metadata())
        changed, mutes = await self._mutes.mute(
            request.room_id, actor.participant_id, target, bearer(token) if token else ()
        )
        return messaging_pb2.MuteParticipantResponse(changed=changed, mutes=mutes)

    async def UnmuteParticipant(
        self, request: messaging_pb2.UnmuteParticipantRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.UnmuteParticipantResponse:
        actor = await self._actor(request.room_id, context)
        target = muted_target(require_principal(), request.participant_id)
        changed, mutes = await self._mutes.unmute(request.room_id, actor.participant_id, target)
        return messaging_pb2.UnmuteParticipantResponse(changed=changed, mutes=mutes)

    async def ListMutes(
        self, request: messaging_pb2.ListMutesRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.ListMutesResponse:
        principal = require_principal().require_room(request.room_id)
        if not principal.participant_id:
            raise PermissionDenied("The token names no participant.", code="not_a_participant")
        return messaging_pb2.ListMutesResponse(
            mutes=await self._mutes.mutes_of(principal.room_id, principal.participant_id)
        )

    async def close(self) -> None:
        """Let queued sends commit and committed entries finish publishing."""
        await self._committer.close()
        await self._publisher.close()

    # --- ephemeral signals (room_signals.py) -------------------------------------------------------

    async def SendTyping(
        self, request: messaging_pb2.SendTypingRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.SendTypingResponse:
        principal = require_principal().require_room(request.room_id)
        token = bearer_from_metadata(context.invocation_metadata())
        participant = await self._participants.authorize_writer(principal, bearer(token) if token else ())
        await self._signals.typing(principal.room_id, principal.participant_id, participant.username)
        return messaging_pb2.SendTypingResponse()

    async def ReportPresence(
        self, request: messaging_pb2.ReportPresenceRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.ReportPresenceResponse:
        return await self._signals.report_presence(request)

    async def GetPresence(
        self, request: messaging_pb2.GetPresenceRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.GetPresenceResponse:
        room_id = require_principal().require_room(request.room_id).room_id
        return await self._signals.presence(room_id)

    async def GetMessagingStats(
        self, request: messaging_pb2.GetMessagingStatsRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.GetMessagingStatsResponse:
        return await self._stats.answer()

    async def KickParticipants(
        self, request: messaging_pb2.KickParticipantsRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.KickParticipantsResponse:
        targets, failed = await self._signals.kick(require_principal(), request)
        # Their room tokens were revoked at rooms: what this process cached about them is stale.
        for room_id, participant_id in targets:
            self._participants.forget(room_id, participant_id)
        if failed:
            raise Unavailable(
                f"{failed} of {len(targets)} participants could not be disconnected yet; try again.",
                code="signals_unavailable",
            )
        return messaging_pb2.KickParticipantsResponse(published=len(targets))

    async def AnnounceRoomUpdate(
        self, request: messaging_pb2.AnnounceRoomUpdateRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.AnnounceRoomUpdateResponse:
        announced = await self._signals.announce_room_update(require_principal(), request.room_id)
        self._policies.learn(announced.room)
        if announced.room.closed or announced.room.taken_down:
            # A closed room keeps no media: it goes now (the sweeper is only the backstop).
            try:
                await self._media_sweeper.purge_room(announced.room.id)
            except Exception:
                log.exception("purging the media of closed room %s failed", announced.room.id)
        return announced

    # --- erasing a closed room, forgetting deleted accounts (erasure.py, forgetting.py) ------------

    async def EraseRoom(
        self, request: messaging_pb2.EraseRoomRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.EraseRoomResponse:
        require_service("rooms", "cli")
        return await self._eraser.erase(validation.room_id(request.room_id))

    async def ForgetParticipants(
        self, request: messaging_pb2.ForgetParticipantsRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.ForgetParticipantsResponse:
        require_service("rooms")
        participants = forgotten_participants(request)
        outcomes = await self._forgetting.forget(participants, erase=request.erase_messages)
        cached = True
        response = messaging_pb2.ForgetParticipantsResponse()
        for outcome in outcomes:
            ids = [p.participant_id for p in participants if p.room_id == outcome.room_id]
            for participant_id in ids:
                self._participants.forget(outcome.room_id, participant_id)
            # The hot cache loses the old names (and erased texts) before the entry goes out.
            changed = await self._forgetting.hot_window(outcome.room_id, ids, self._cache.size)
            cached = await self._cache.redact_many(outcome.room_id, changed) and cached
            if outcome.entries:
                await asyncio.shield(self._publish_committed(*outcome.entries))
            response.entries += len(outcome.entries)
            response.messages_changed += outcome.messages_changed
        if not cached:
            # Committed and published; a call again (rooms' outbox retries) redoes the hot cache.
            raise Unavailable("The hot cache could not be updated yet; try again.", code="cache_unavailable")
        return response

    # --- media (media.py, media_purge.py) ----------------------------------------------------------

    async def CreateMedia(
        self, request: messaging_pb2.CreateMediaRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.CreateMediaResponse:
        actor = await self._actor(request.room_id, context)
        kind = media.kind_name(request.kind)
        policy = await self._policies.get(request.room_id)
        if policy.taken_down:
            raise NotFound("This room was taken down by ChatPop's moderators.", code="room_taken_down")
        if policy.closed:
            raise FailedPrecondition("This room is closed.", code="room_closed")
        if kind not in policy.media_kinds:
            raise PermissionDenied(f"This room does not allow {kind} messages.", code="media_not_allowed")
        if not self._media_enabled:
            raise Unavailable("Media uploads are switched off.", code="media_disabled")
        record = await self._media.create(request.room_id, actor.participant_id, kind)
        return messaging_pb2.CreateMediaResponse(media=record)

    def _uploader(self, room_id: str) -> str:
        principal = require_principal().require_room(room_id)
        if not principal.participant_id:
            raise PermissionDenied("The token names no participant.", code="not_a_participant")
        return principal.participant_id

    async def CompleteMedia(
        self, request: messaging_pb2.CompleteMediaRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.CompleteMediaResponse:
        uploader = self._uploader(request.room_id)
        media_ref = media.media_id(request.media_id, code="invalid_media_id")
        record = await self._media.complete(request.room_id, uploader, media_ref, media.completion(request))
        return messaging_pb2.CompleteMediaResponse(media=record)

    async def AbandonMedia(
        self, request: messaging_pb2.AbandonMediaRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.AbandonMediaResponse:
        uploader = self._uploader(request.room_id)
        media_ref = media.media_id(request.media_id, code="invalid_media_id")
        await self._media.abandon(request.room_id, uploader, media_ref)
        return messaging_pb2.AbandonMediaResponse()

    async def GetMedia(
        self, request: messaging_pb2.GetMediaRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.GetMediaResponse:
        room_id = validation.room_id(request.room_id)
        principal = require_principal()
        if principal.token_type == "room":
            principal.require_room(room_id)
            await self._policies.refuse_taken_down(room_id)
        else:
            require_service("edge")
        if not 1 <= len(request.media_ids) <= media.MAX_GET:
            raise InvalidArgument(
                f"Ask about 1 to {media.MAX_GET} media at a time.", code="invalid_media_ids"
            )
        ids = [media.media_id(value, code="invalid_media_id") for value in request.media_ids]
        # Participants other than the host get no media of a message hidden pending review.
        withhold = principal.token_type == "room" and not principal.is_host
        return messaging_pb2.GetMediaResponse(
            media=await self._media.get(room_id, ids, withhold_hidden=withhold)
        )

    # --- operations (the admin CLI) ---------------------------------------------------------------

    async def InspectRoom(
        self, request: messaging_pb2.InspectRoomRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.InspectRoomResponse:
        require_service("cli")
        report = await self._inspection.inspect(validation.room_id(request.room_id))
        return report.message()

    async def RebuildHotCache(
        self, request: messaging_pb2.RebuildHotCacheRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.RebuildHotCacheResponse:
        require_service("cli")
        entries, stream = await self._inspection.rebuild(validation.room_id(request.room_id))
        return messaging_pb2.RebuildHotCacheResponse(entries=entries, hot_cache=stream.message())

    # --- retention (retention.py) ------------------------------------------------------------------

    async def RunRetention(
        self, request: messaging_pb2.RunRetentionRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.RunRetentionResponse:
        require_service("cli")
        room_id = validation.room_id(request.room_id) if request.room_id else ""
        return await self._retention.run(room_id, dry_run=request.dry_run)

    # --- encryption at rest (keys.py, reencrypt.py; the admin CLI's `keys` commands) ----------------

    async def RotateMasterKey(
        self, request: messaging_pb2.RotateMasterKeyRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.RotateMasterKeyResponse:
        require_service("cli")
        ring = keys.keyring()
        rewrapped = await ring.rotate_master()
        return messaging_pb2.RotateMasterKeyResponse(master_version=ring.master.current, rewrapped=rewrapped)

    async def RotateRoomKeys(
        self, request: messaging_pb2.RotateRoomKeysRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.RotateRoomKeysResponse:
        require_service("cli")
        room_ids = [validation.room_id(room_id) for room_id in request.room_ids]
        return messaging_pb2.RotateRoomKeysResponse(rotated=await self._reencryption.rotate_rooms(room_ids))

    async def ReencryptRooms(
        self, request: messaging_pb2.ReencryptRoomsRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.ReencryptRoomsResponse:
        require_service("cli")
        if request.limit < 0:
            raise InvalidArgument("limit must not be negative.", code="invalid_limit")
        room_ids = [validation.room_id(room_id) for room_id in request.room_ids]
        done, more = await self._reencryption.run(room_ids, request.limit)
        return messaging_pb2.ReencryptRoomsResponse(reencrypted=done, more=more)

    async def GetKeyVersions(
        self, request: messaging_pb2.GetKeyVersionsRequest, context: grpc.aio.ServicerContext
    ) -> messaging_pb2.GetKeyVersionsResponse:
        require_service("cli")
        room_id = validation.room_id(request.room_id) if request.room_id else ""
        return await self._reencryption.versions(room_id)


def _reply_target_not_found() -> InvalidArgument:
    return InvalidArgument("The message replied to does not exist.", code="reply_target_not_found")


def _room_closed() -> FailedPrecondition:
    return FailedPrecondition("This room is closed.", code="room_closed")


def _send_error(answer: Committed | BaseException | None) -> messaging_pb2.SendError:
    """What SendMessage would have failed with, as a batch's per-send error."""
    if isinstance(answer, ServiceError):
        error = answer
    elif isinstance(answer, BaseException) and is_transient(answer):
        error = Unavailable(UNAVAILABLE_MESSAGE, code="service_unavailable", retry_after=1)
    else:
        if isinstance(answer, BaseException):
            log.error("a batched send failed", exc_info=answer)
        return messaging_pb2.SendError(
            status=grpc.StatusCode.INTERNAL.value[0], code="internal", message="internal error"
        )
    retry_after_ms = 0
    if error.code == "overloaded":
        retry_after_ms = OVERLOAD_RETRY_AFTER_MS
    elif error.retry_after is not None:
        retry_after_ms = error.retry_after * 1000
    elif isinstance(error, ResourceExhausted | Unavailable):
        retry_after_ms = 1000
    return messaging_pb2.SendError(
        status=error.status.value[0],
        code=error.code,
        message=error.message,
        retryable=error.status in _RETRYABLE,
        retry_after_ms=retry_after_ms,
    )


# A batched send's span is what SendMessage's server span would have been.
_SEND_SPAN = "/chatpop.messaging.v1.MessagingService/SendMessage"
# Statuses that are messaging's fault (a send's span is an error), as for a server span of gRPC.
_SERVER_FAULTS = frozenset(
    code.value[0]
    for code in (
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    )
)


def _send_span(batched: messaging_pb2.BatchedSend, batch: trace.SpanContext) -> trace.Span:
    """The server span of one send of a batch, a child of the edge's send (its traceparent), linked
    to the SendMessages call that carried it (`batch`); started as the batch arrived."""
    parent = (
        propagate.extract({"traceparent": batched.traceparent, "tracestate": batched.tracestate})
        if batched.traceparent
        else Context()
    )
    return tracer.start_span(
        _SEND_SPAN,
        context=parent,
        kind=trace.SpanKind.SERVER,
        links=[trace.Link(batch)] if batch.is_valid else None,
        attributes={
            "rpc.system": "grpc",
            "rpc.service": "chatpop.messaging.v1.MessagingService",
            "rpc.method": "SendMessage",
            "chatpop.room_id": batched.send.room_id,
            "chatpop.client_msg_id": batched.send.client_msg_id,
        },
    )


async def _in_span(span: trace.Span, work: Awaitable[T]) -> T:
    """Await `work` with `span` current: what it traces goes in that span (not ended here)."""
    with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
        return await work


def _stamp(answered_at: list[int | None], index: int, _answered: asyncio.Future[Committed]) -> None:
    answered_at[index] = time.time_ns()
