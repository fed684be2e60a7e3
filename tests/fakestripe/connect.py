"""Connect: Express accounts of the platform's hosts, onboarding links, and finishing onboarding.

Events about a connected account carry its id in `account`, as Stripe's do, so they are listed with a
`Stripe-Account` header and delivered to Connect webhook endpoints (`connect=true`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.fakestripe.errors import StripeApiError, invalid_request
from tests.fakestripe.events import Ctx
from tests.fakestripe.forms import (
    param_bool,
    param_dict,
    param_metadata,
    param_str,
    refuse_unknown,
)
from tests.fakestripe.listing import PAGING, created_filter, page
from tests.fakestripe.store import new_id, snapshot, token

ACCOUNT_TYPES = ("express", "standard", "custom")
LINK_TYPES = ("account_onboarding", "account_update")
LINK_SECONDS = 300
_DUE = [
    "business_profile.mcc",
    "business_profile.url",
    "external_account",
    "individual.dob.day",
    "individual.first_name",
    "individual.last_name",
    "tos_acceptance.date",
    "tos_acceptance.ip",
]
_CREATE = [
    "type",
    "country",
    "email",
    "capabilities",
    "business_type",
    "business_profile",
    "metadata",
    "default_currency",
    "controller",
]
_UPDATE = ["email", "capabilities", "business_type", "business_profile", "metadata", "default_currency"]


def _requested(params: Mapping[str, Any]) -> dict[str, bool]:
    requested: dict[str, bool] = {}
    for name, value in param_dict(params, "capabilities").items():
        if not isinstance(value, dict) or set(value) - {"requested"}:
            raise invalid_request(
                f"Invalid capabilities[{name}]: pass requested=true or false", param=f"capabilities[{name}]"
            )
        requested[name] = param_bool(value, "requested")
    return requested


def _requirements(due: list[str]) -> dict[str, Any]:
    return {
        "alternatives": [],
        "current_deadline": None,
        "currently_due": list(due),
        "disabled_reason": "requirements.past_due" if due else None,
        "errors": [],
        "eventually_due": list(due),
        "past_due": list(due),
        "pending_verification": [],
    }


def create_account(ctx: Ctx, params: Mapping[str, Any]) -> dict[str, Any]:
    refuse_unknown(params, _CREATE)
    kind = param_str(params, "type")
    if kind is not None and kind not in ACCOUNT_TYPES:
        raise invalid_request("Invalid type: must be one of custom, express, or standard", param="type")
    capabilities = {name: "inactive" for name, wanted in _requested(params).items() if wanted}
    account: dict[str, Any] = {
        "id": new_id("acct", 16),
        "object": "account",
        "business_profile": {
            "mcc": None,
            "name": None,
            "url": None,
            **param_dict(params, "business_profile"),
        },
        "business_type": param_str(params, "business_type"),
        "capabilities": capabilities,
        "charges_enabled": False,
        "country": (param_str(params, "country") or "US").upper(),
        "created": ctx.platform.now(),
        "default_currency": param_str(params, "default_currency") or "usd",
        "details_submitted": False,
        "email": param_str(params, "email"),
        "external_accounts": {
            "object": "list",
            "data": [],
            "has_more": False,
            "total_count": 0,
            "url": "",
        },
        "future_requirements": _requirements([]),
        "metadata": param_metadata(params),
        "payouts_enabled": False,
        "requirements": _requirements(_DUE),
        "settings": {"payouts": {"schedule": {"interval": "daily"}}},
        "tos_acceptance": {"date": None},
        "type": kind or "express",
    }
    account["external_accounts"]["url"] = f"/v1/accounts/{account['id']}/external_accounts"
    return ctx.platform.add("accounts", account)


def update_account(ctx: Ctx, account: dict[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    refuse_unknown(params, _UPDATE)
    before = snapshot(account)
    if "email" in params:
        account["email"] = param_str(params, "email")
    if "business_type" in params:
        account["business_type"] = param_str(params, "business_type")
    if "default_currency" in params:
        account["default_currency"] = param_str(params, "default_currency") or account["default_currency"]
    if "business_profile" in params:
        account["business_profile"] = {
            **account["business_profile"],
            **param_dict(params, "business_profile"),
        }
    account["metadata"] = param_metadata(params, account["metadata"])
    for name, wanted in _requested(params).items():
        if wanted:
            account["capabilities"].setdefault(name, "active" if account["charges_enabled"] else "inactive")
        else:
            account["capabilities"].pop(name, None)
    _announce(ctx, account, before)
    return account


def _announce(ctx: Ctx, account: dict[str, Any], before: dict[str, Any]) -> None:
    previous = {key: value for key, value in before.items() if account.get(key) != value}
    if previous:
        ctx.emit("account.updated", account, account=account["id"], previous=previous)


def finish_onboarding(
    ctx: Ctx,
    account: dict[str, Any],
    *,
    charges_enabled: bool = True,
    payouts_enabled: bool = True,
    details_submitted: bool = True,
) -> dict[str, Any]:
    """The host completes Stripe's hosted onboarding: the account can take charges and be paid out."""
    before = snapshot(account)
    account.update(
        charges_enabled=charges_enabled,
        payouts_enabled=payouts_enabled,
        details_submitted=details_submitted,
    )
    state = "active" if charges_enabled else "inactive"
    account["capabilities"] = {name: state for name in account["capabilities"] or {"transfers": state}}
    account["requirements"] = _requirements([] if details_submitted else _DUE)
    if details_submitted and account["tos_acceptance"]["date"] is None:
        account["tos_acceptance"] = {"date": ctx.platform.now(), "ip": "127.0.0.1"}
    _announce(ctx, account, before)
    return account


def create_link(ctx: Ctx, params: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    refuse_unknown(params, ["account", "refresh_url", "return_url", "type", "collect", "collection_options"])
    account_id = param_str(params, "account", required=True)
    assert account_id is not None
    account = ctx.platform.collection("accounts").get(account_id)
    if account is None:
        raise StripeApiError(400, f"No such account: '{account_id}'", param="account", code="account_invalid")
    kind = param_str(params, "type", required=True)
    if kind not in LINK_TYPES:
        raise invalid_request(
            "Invalid type: must be one of account_onboarding or account_update", param="type"
        )
    refresh_url = param_str(params, "refresh_url", required=True)
    return_url = param_str(params, "return_url", required=True)
    now = ctx.platform.now()
    link_token = token(24)
    ctx.platform.account_links[link_token] = {
        "account": account_id,
        "refresh_url": refresh_url,
        "return_url": return_url,
        "expires_at": now + LINK_SECONDS,
        "used": False,
    }
    return {
        "object": "account_link",
        "created": now,
        "expires_at": now + LINK_SECONDS,
        "url": f"{base_url}/connect/onboarding/{account_id}?link={link_token}",
    }


def list_accounts(ctx: Ctx, params: Mapping[str, Any]) -> dict[str, Any]:
    refuse_unknown(params, ["created", *PAGING])
    items = created_filter(params, ctx.platform.newest_first("accounts"))
    return page(items, params, "/v1/accounts", "account")
