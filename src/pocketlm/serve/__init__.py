"""Serving: an OpenAI-compatible HTTP server (FastAPI + uvicorn) over the generation engine, with
pocketlm's intent and document routes and a static web page.

    from pocketlm.serve import create_app
"""

from pocketlm.serve.server import create_app

__all__ = ["create_app"]
