"""Admin request bodies decoded with JSON numbers as `Decimal`, never as binary floats.

FastAPI reads a JSON body with `Request.json()`, which gives `0.1` as the float nearest to it;
money must not take that detour. `DecimalJSONRoute` (the admin router's `route_class`) hands
each endpoint a request whose `json()` decodes non-integer numbers as `Decimal`, so a USD
amount reaches `app.money.parse_usd` exactly as the client wrote it. Integers stay `int`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


class DecimalJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = json.loads(await self.body(), parse_float=Decimal)
        return self._json


class DecimalJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def decimal_handler(request: Request) -> Response:
            return await handler(DecimalJSONRequest(request.scope, request.receive))

        return decimal_handler
