"""HTTP routes: the chat endpoints (plain ASGI) and everything else (Starlette)."""
