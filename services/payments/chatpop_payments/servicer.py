"""PaymentsService: for now it reports how payments are configured."""

from __future__ import annotations

import asyncpg
import grpc

from chatpop.payments.v1 import payments_pb2, payments_pb2_grpc
from chatpop_payments.settings import Settings


class PaymentsServicer(payments_pb2_grpc.PaymentsServiceServicer):
    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self._settings = settings
        # The ledger lives here; the purchasing RPCs that write it arrive with the paid features.
        self._pool = pool

    async def GetConfig(
        self, request: payments_pb2.GetConfigRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.GetConfigResponse:
        if self._settings.test_mode:
            return payments_pb2.GetConfigResponse(
                mode=payments_pb2.MODE_TEST, currency=self._settings.currency
            )
        return payments_pb2.GetConfigResponse(
            mode=payments_pb2.MODE_STRIPE,
            currency=self._settings.currency,
            publishable_key=self._settings.stripe_publishable_key,
        )
