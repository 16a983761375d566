"""Document assistance (SlimLM): loaders, SlimLM's DocAssist prompt format, assisting on the engine,
the DocAssist data builder, offline documents and the metrics.

    from pocketlm.documents.assist import run_assist, stream_assist
    from pocketlm.documents.loaders import load_document
"""
