"""Tiny random language models of the real classes, built offline, and a loopback OpenAI-compatible server.

- :func:`build_tiny_chat_lm`: a byte-level BPE tokenizer (``tokenizers``, 256 byte symbols + chat specials,
  a ChatML template) and a 2-layer ``Qwen2ForCausalLM``, saved with ``save_pretrained``; loads through
  ``AutoTokenizer`` / ``AutoModelForCausalLM`` like a Qwen2.5 instruct folder.
- :func:`build_tiny_vlm`: the same tokenizer, a tiny CLIP vision tower and Qwen2 text model in a
  ``LlavaForConditionalGeneration`` with a ``LlavaProcessor``; loads through ``AutoProcessor`` /
  ``AutoModelForImageTextToText``.
- :class:`Steer`: a logits processor that makes the real model write given answers (random weights
  write bytes of noise otherwise): for each batch row, the text the test wants after the prompt, chosen
  by a function of the prompt and the row.
- :func:`serve_openai`: ``POST /v1/chat/completions`` answered by a :class:`LocalChat` over a tiny model,
  honouring ``n``, ``seed``, ``max_tokens``, ``temperature`` and vLLM's ``guided_choice`` / ``guided_regex``.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
          "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}"
          "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
ASSISTANT = "<|im_start|>assistant\n"


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def tiny_chat_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(_bytes_to_unicode().values())}
    merges = [("Ġ", "t"), ("Ġt", "h"), ("Ġ", "a")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<image>"]})
    tokenizer.chat_template = CHATML
    return tokenizer


def _text_config(tokenizer, positions: int):
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=positions,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
                       tie_word_embeddings=True)


def build_tiny_chat_lm(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = tiny_chat_tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_text_config(tokenizer, 2048))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_vlm(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = tiny_chat_tokenizer()
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=32, patch_size=8, projection_dim=32)
    config = LlavaConfig(vision_config=vision, text_config=_text_config(tokenizer, 4096),
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
                         vision_feature_select_strategy="full")
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    processor = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                  crop_size={"height": 32, "width": 32}),
                               tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="full",
                               chat_template=CHATML, image_token="<image>", num_additional_image_tokens=1)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


class Steer:
    """A logits processor: row ``r`` of a call whose prompt is ``p`` writes ``want(p, r)`` (None: leave the
    model alone), token by token, then its end-of-sequence token. Prompt and answer are told apart by the
    chat template's assistant marker, so one processor serves every call of a model."""

    def __init__(self, tokenizer, want: Callable[[str, int], str | None]):
        self.tokenizer, self.want = tokenizer, want
        self.calls: list[str] = []

    def __call__(self, input_ids, scores):
        for row in range(input_ids.shape[0]):
            text = self.tokenizer.decode(input_ids[row], skip_special_tokens=False)
            prompt, _, _ = text.rpartition(ASSISTANT)
            wanted = self.want(prompt, row)
            if wanted is None:
                continue
            target = self.tokenizer.encode(wanted, add_special_tokens=False) + [self.tokenizer.eos_token_id]
            done = len(self.tokenizer.encode(text.rpartition(ASSISTANT)[2], add_special_tokens=False))
            token = target[min(done, len(target) - 1)]
            scores[row, :] = -1e9
            scores[row, token] = 0.0
        return scores


def serve_openai(chat_model) -> tuple[ThreadingHTTPServer, str]:
    """A loopback OpenAI-compatible server answering with ``chat_model`` (a LocalChat); returns (server, base URL)."""
    from ieiw.backends.lm.constrain import Pattern

    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_POST(self):
            if self.path != "/v1/chat/completions":
                self.send_error(404)
                return
            if self.headers.get("Authorization") != "Bearer test-key":
                self.send_error(401)
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            images, messages = [], []
            for message in body["messages"]:
                content = message["content"]
                if isinstance(content, list):
                    parts = []
                    for part in content:
                        if part["type"] == "image_url":
                            from PIL import Image

                            data = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
                            images.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
                            parts.append({"type": "image"})
                        else:
                            parts.append(part)
                    content = parts
                messages.append({"role": message["role"], "content": content})
            pattern = None
            if "guided_choice" in body:
                pattern = Pattern.choice(body["guided_choice"])
            elif "guided_regex" in body:
                pattern = Pattern.from_regex(body["guided_regex"])
            with lock:
                answers = chat_model.chat([messages], n=body.get("n", 1), max_new_tokens=body.get("max_tokens", 16),
                                          temperature=body.get("temperature", 0.0), top_p=body.get("top_p", 1.0),
                                          seed=body.get("seed", 0), pattern=pattern,
                                          images=[images] if images else None)[0]
            payload = json.dumps({"object": "chat.completion", "model": body["model"], "choices": [
                {"index": i, "message": {"role": "assistant", "content": a}, "finish_reason": "stop"}
                for i, a in enumerate(answers)]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"
