"""No model, config or tokenizer medlens loads may run code from its folder or repository.

Every transformers call medlens makes passes ``trust_remote_code=False``; this also covers the calls
libraries make for it (open_clip's ``HFTextEncoder`` reads ``AutoConfig`` without the argument). There,
transformers asks on the terminal (for 15 s) whether to run a repository's code; with the timeout at 0 it
refuses instead, so a model folder carrying an ``auto_map`` is an error, never a question.
"""

from __future__ import annotations

__all__ = ["refuse_remote_code"]


def refuse_remote_code() -> None:
    """Make transformers refuse, not ask, whenever a repository's code would have to run."""
    import transformers.dynamic_module_utils as dynamic

    dynamic.TIME_OUT_REMOTE_CODE = 0
