"""An OpenAI-compatible chat endpoint (vLLM, TGI, llama.cpp's server): ``POST {endpoint}/chat/completions``.

The key, if the server wants one, comes from the environment (``api_key_env``) and is sent as a bearer
token; it is never written anywhere. Images go as ``data:image/png;base64`` URLs in ``image_url`` parts.
A :class:`~ieiw.backends.lm.constrain.Pattern` is sent the vLLM way (``guided_choice`` or
``guided_regex``); servers that do not know those keys ignore them and the callers parse free text.
Only the standard library is used (``urllib``); a failed request raises :class:`EndpointError` naming the
URL and the status.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

import numpy as np

from ieiw.backends.lm.base import ChatModel, LanguageModelSettings, Messages
from ieiw.backends.lm.constrain import Pattern


class EndpointError(RuntimeError):
    """A request to the endpoint that failed (unreachable, an HTTP error, an answer that is not JSON)."""


def png_data_url(image: np.ndarray) -> str:
    from ieiw.imageio import encode

    return "data:image/png;base64," + base64.b64encode(encode(np.ascontiguousarray(image), "png")).decode()


def with_images(messages: Messages, images: Sequence[np.ndarray]) -> Messages:
    """The messages with each ``{"type": "image"}`` part given the next image as an ``image_url``."""
    pending = list(images)
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            parts = []
            for part in content:
                if part.get("type") == "image":
                    if not pending:
                        raise ValueError("more image parts than images")
                    parts.append({"type": "image_url", "image_url": {"url": png_data_url(pending.pop(0))}})
                else:
                    parts.append(part)
            content = parts
        out.append({**message, "content": content})
    return out


class OpenAIChat(ChatModel):
    def __init__(self, settings: LanguageModelSettings, api_key: str | None = None):
        self.settings = settings
        self.url = settings.endpoint.rstrip("/") + "/chat/completions"  # type: ignore[union-attr]
        self._key = api_key

    def describe(self) -> dict[str, Any]:
        return self.settings.describe()

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        request = urllib.request.Request(self.url, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            raise EndpointError(f"{self.url}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise EndpointError(f"{self.url}: {getattr(exc, 'reason', exc)}") from None
        except json.JSONDecodeError as exc:
            raise EndpointError(f"{self.url}: answer is not JSON: {exc}") from None

    def chat(self, conversations: Sequence[Messages], *, n: int = 1, max_new_tokens: int = 64,
             temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, pattern: Pattern | None = None,
             images: Sequence[Sequence[np.ndarray]] | None = None) -> list[list[str]]:
        out = []
        for index, messages in enumerate(conversations):
            if images:
                messages = with_images(list(messages), images[index])
            body: dict[str, Any] = {"model": self.settings.model, "messages": list(messages), "n": n,
                                    "max_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p,
                                    "seed": seed}
            if pattern is not None:
                if pattern.is_choice():
                    body["guided_choice"] = list(pattern.parts[0])
                else:
                    body["guided_regex"] = pattern.to_regex()
            answer = self._post(body)
            try:
                choices = sorted(answer["choices"], key=lambda c: c.get("index", 0))
                out.append([str(c["message"]["content"] or "") for c in choices])
            except (KeyError, TypeError) as exc:
                raise EndpointError(f"{self.url}: unexpected answer shape ({exc!r})") from None
        return out
