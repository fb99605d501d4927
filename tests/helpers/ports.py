"""A free local port for a launcher's rendezvous."""

import socket


def free_port() -> str:
    """A port no other test holds, also under pytest-xdist's parallel workers (the kernel picks
    it; a fixed range would be handed out twice, once per worker)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])
