"""Everyday tools on a trained CLAP: embed audio to an index file, search it, classify files zero-shot.

`clapforge.tools.api` is the Python side (`embed_audio`, `embed_text`, `classify`, `search`); the `embed`, `search`
and `classify` sub-commands are in `clapforge.commands`.
"""
