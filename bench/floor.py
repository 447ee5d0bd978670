"""The HTTP floor: a hello-world ASGI app, served by the same server and workers as lockserve.

It reads the request body and answers a fixed small JSON document, so the difference between
its req/s and lockserve's is what validation, inference, encoding and logging cost.
"""

BODY = b'{"predictions":[{"label":"Gentoo"}]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict, receive: object, send: object) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()  # type: ignore[operator]
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": BODY})  # type: ignore[operator]
