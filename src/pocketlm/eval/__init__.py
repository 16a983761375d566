"""Capability evaluation (lm-eval, DroidCall intent, DocAssist, held-out perplexity) and the report card."""
