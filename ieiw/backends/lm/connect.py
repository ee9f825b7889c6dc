"""The chat model a :class:`~ieiw.backends.lm.base.LanguageModelSettings` names: an endpoint client or a
local model (loaded now)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ieiw.backends.lm.base import ChatModel, LanguageModelSettings


def connect(settings: LanguageModelSettings, vision: bool = False, logits_processors: Sequence[Any] = ()) -> ChatModel:
    """``vision``: an image-text-to-text model; ``logits_processors``: run at every step of a local model."""
    if settings.endpoint is not None:
        from ieiw.backends.lm.http import OpenAIChat

        return OpenAIChat(settings, api_key=os.environ.get(settings.api_key_env))
    from ieiw.backends.lm.local import LocalChat

    return LocalChat(settings, vision=vision, logits_processors=logits_processors)
