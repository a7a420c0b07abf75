"""Routes for developers, authenticated by their own API key (or a password to sign up and
log in): the balance, the transaction history, signup and login.

Amounts in JSON are decimal numbers written exactly from integer micros (`json_amount`):
12.5 means 12.500000 in the wallet currency, never a binary float's neighbour.

Login answers the account and a summary of its keys (ids, names, prefixes, limits), not a
session token and never a key: keys are shown once, when made. A dashboard can build
sessions on top later.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from creditgate.api.responses import bearer_token, client_ip, handles_errors, json_body, json_response
from creditgate.ledger.operations import page_limit
from creditgate.ledger.service import BillingService


def account_routes(service: BillingService) -> list[Route]:
    @handles_errors
    async def credits(request: Request) -> Response:
        principal = await service.authenticate(bearer_token(request), client_ip(request))
        state = await service.account_state(principal.account_id, fresh=True)
        return json_response(service.credits_view(state))

    @handles_errors
    async def transactions(request: Request) -> Response:
        principal = await service.authenticate(bearer_token(request), client_ip(request))
        limit = page_limit(request.query_params.get("limit"))
        data, cursor = await service.transactions_page(principal.account_id, limit, request.query_params.get("cursor"))
        return json_response({"data": data, "next_cursor": cursor})

    @handles_errors
    async def signup(request: Request) -> Response:
        body = await json_body(request)
        made = await service.signup(body.get("email"), body.get("password"))
        return json_response(made, 201)

    @handles_errors
    async def login(request: Request) -> Response:
        body = await json_body(request)
        return json_response(await service.login(body.get("email"), body.get("password", "")))

    return [
        Route("/v1/credits", credits, methods=["GET"]),
        Route("/v1/credits/transactions", transactions, methods=["GET"]),
        Route("/auth/signup", signup, methods=["POST"]),
        Route("/auth/login", login, methods=["POST"]),
    ]
