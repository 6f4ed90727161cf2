"""The Functions Python worker's HTTP-streams server, minus the host and the gRPC channel.

With HTTP streams on, the worker starts the extension's `WebApp` (a FastAPI
app whose one `/{path:path}` route takes every method) under uvicorn in its
own event loop, hands each request's FastAPI `Request` to the invocation,
syncs the route parameters into it, awaits the function's return value and
returns that response to uvicorn (azure-functions-python-worker,
`http_v2.initialize_http_server`). Here the route calls the function
directly instead of going through the invocation id and the coordinator.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import uvicorn
from azurefunctions.extensions.http.fastapi import (
    Request,
    RequestSynchronizer,
    Response,
    WebApp,
)

from tests.conftest import free_socket

Handler = Callable[[Request], Awaitable[Response]]


@contextlib.asynccontextmanager
async def functions_worker(handler: Handler) -> AsyncIterator[str]:
    """Serves `handler` the way the worker serves an HTTP function; yields the base URL."""
    web_app = WebApp()
    synchronizer = RequestSynchronizer()

    async def catch_all(request: Request):  # type: ignore[no-untyped-def]
        synchronizer.sync_route_params(request, {"path": request.url.path.lstrip("/")})
        return await handler(request)

    web_app.route(catch_all)
    sock = free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        web_app.get_app(),
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn stopped before it started")
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        sock.close()


def durable_binding(port: int) -> str:
    """The durableClient binding value the host hands the function: a JSON string."""
    base = f"http://127.0.0.1:{port}/runtime/webhooks/durabletask"
    query = "taskHub=spotgate&connection=Storage&code=hostkey"
    instance = f"{base}/instances/INSTANCEID"
    return orjson.dumps(
        {
            "taskHubName": "spotgate",
            "creationUrls": {
                "createNewInstancePostUri": f"{base}/orchestrators/{{functionName}}"
                f"[/{{instanceId}}]?{query}",
                "createAndWaitOnNewInstancePostUri": f"{base}/orchestrators/{{functionName}}"
                f"[/{{instanceId}}]?timeout={{timeoutInSeconds}}&{query}",
            },
            "managementUrls": {
                "id": "INSTANCEID",
                "statusQueryGetUri": f"{instance}?{query}",
                "sendEventPostUri": f"{instance}/raiseEvent/{{eventName}}?{query}",
                "terminatePostUri": f"{instance}/terminate?reason={{text}}&{query}",
                "purgeHistoryDeleteUri": f"{instance}?{query}",
            },
            "baseUrl": base,
            "requiredQueryStringParameters": query,
            "rpcBaseUrl": f"http://127.0.0.1:{port}/durabletask/",
            "httpBaseUrl": "",
        }
    ).decode()
