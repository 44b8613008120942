"""``synth teacher-server``: serve the scripted teacher (registered lazily by
:mod:`synthagent.plugins.backends.scripted_teacher` through ``synth_register_commands``)."""

from __future__ import annotations

import click

from synthagent.core.cli import guard
from synthagent.plugins.backends.scripted_teacher import teacher_server

__all__ = ["teacher_server_cmd"]


@click.command("teacher-server")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port on 127.0.0.1.")
@click.option("--noise", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Probability of a fault per request (malformed JSON, missing field, invented id, leak, early stop).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the fault draws.")
@guard
def teacher_server_cmd(port: int, noise: float, seed: int) -> None:
    """Serve the scripted teacher: an OpenAI-compatible endpoint that plays every role of the LLM path.

    Point a run at it: synth run --set generator=persona-fuzzy --set tools=llm --set user=llm
    --set llm.backend=openai --set llm.base_url=http://127.0.0.1:PORT/v1 --set llm.model=teacher
    """
    import time

    from synthagent.core.errors import UsageError

    try:
        server = teacher_server(noise, seed, port).__enter__()
    except OSError as exc:
        raise UsageError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None
    click.echo(f"scripted teacher (noise {noise}) at {server.base_url}  (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.__exit__(None, None, None)
