"""The data path: a streaming HTTP/1.1 reverse proxy and a TCP relay on asyncio."""
