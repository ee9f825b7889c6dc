"""A local chat model through ``transformers``' own classes, local weights only.

Text: ``AutoTokenizer`` + ``AutoModelForCausalLM`` (a Qwen2.5 or Llama-3 instruct model). Vision:
``AutoProcessor`` + ``AutoModelForImageTextToText`` (Qwen2-VL, Qwen2.5-VL, LLaVA...). The prompt is the
model's own chat template; batches are left-padded; ``seed`` seeds torch before each call, so the same
call on the same weights and device answers the same. ``logits_processors`` run at every step (the tests
use one to steer a random model; a user may pass their own through the Python API).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ieiw.backends.lm.base import ChatModel, LanguageModelSettings, Messages
from ieiw.backends.lm.constrain import Pattern, compile_pattern, prefix_function
from ieiw.backends.models import ModelNotFoundError, torch_device

FALLBACK_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {% if m['content'] is string %}{{ m['content'] }}"
                     "{% else %}{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
                     "{% endfor %}{% endif %}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")


class LocalChat(ChatModel):
    def __init__(self, settings: LanguageModelSettings, vision: bool = False, logits_processors: Sequence[Any] = ()):
        import torch
        from transformers import (
            AutoModelForCausalLM,
            AutoModelForImageTextToText,
            AutoProcessor,
            AutoTokenizer,
        )

        problems = settings.problems()
        if problems:
            raise ModelNotFoundError(problems[0])
        self.settings, self.vision, self.torch = settings, vision, torch
        self.logits_processors = list(logits_processors)
        self.device = torch_device(settings.device)
        if settings.dtype == "auto":
            self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        else:
            self.dtype = getattr(torch, settings.dtype)
        source = str(Path(settings.model).expanduser()) if settings.is_local_folder() else settings.model
        kwargs: dict[str, Any] = {"local_files_only": True}
        if settings.revision and not settings.is_local_folder():
            kwargs["revision"] = settings.revision
        if vision:
            self.processor = AutoProcessor.from_pretrained(source, **kwargs)
            self.tokenizer = self.processor.tokenizer
            self.model = AutoModelForImageTextToText.from_pretrained(source, dtype=self.dtype, **kwargs)
        else:
            self.processor = None
            self.tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(source, dtype=self.dtype, **kwargs)
        self.model.to(self.device).eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._described = settings.describe()

    def describe(self) -> dict[str, Any]:
        return dict(self._described)

    @functools.cached_property
    def eos_ids(self) -> list[int]:
        found = self.model.generation_config.eos_token_id
        ids = found if isinstance(found, list) else [found] if found is not None else []
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        return sorted({int(i) for i in ids})

    @functools.lru_cache(maxsize=8)  # noqa: B019 - one model object per process, a handful of patterns
    def _compiled(self, pattern: Pattern):
        encode = functools.partial(self.tokenizer.encode, add_special_tokens=False)
        return compile_pattern(pattern, encode, self.eos_ids, len(self.tokenizer))

    def _prompt(self, messages: Messages) -> str:
        template = None if getattr(self.tokenizer, "chat_template", None) else FALLBACK_TEMPLATE
        owner = self.processor if self.vision and getattr(self.processor, "chat_template", None) else self.tokenizer
        return owner.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                         **({"chat_template": template} if template and owner is self.tokenizer else {}))

    def chat(self, conversations: Sequence[Messages], *, n: int = 1, max_new_tokens: int = 64,
             temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, pattern: Pattern | None = None,
             images: Sequence[Sequence[np.ndarray]] | None = None) -> list[list[str]]:
        torch = self.torch
        from transformers import LogitsProcessorList

        if not conversations:
            return []
        prompts = [self._prompt(list(messages)) for messages in conversations]
        if self.vision:
            from PIL import Image

            pictures = [[Image.fromarray(np.ascontiguousarray(image)) for image in group] for group in (images or [])]
            inputs = self.processor(text=prompts, images=pictures or None, return_tensors="pt", padding=True)
        else:
            inputs = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        inputs = {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                  for k, v in inputs.items()}
        length = inputs["input_ids"].shape[1]
        sample = temperature > 0
        options: dict[str, Any] = {
            "max_new_tokens": max_new_tokens, "num_return_sequences": n, "do_sample": sample,
            "pad_token_id": self.tokenizer.pad_token_id, "eos_token_id": self.eos_ids,
            "logits_processor": LogitsProcessorList(self.logits_processors),
        }
        if sample:
            options.update(temperature=temperature, top_p=top_p, top_k=0)
        if pattern is not None:
            options["prefix_allowed_tokens_fn"] = prefix_function(self._compiled(pattern), length)
        torch.manual_seed(seed)
        with torch.inference_mode():
            output = self.model.generate(**inputs, **options)
        texts = self.tokenizer.batch_decode(output[:, length:], skip_special_tokens=True)
        return [texts[i * n:(i + 1) * n] for i in range(len(conversations))]
