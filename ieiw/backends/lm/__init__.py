"""Language models: a local chat model (``transformers``, local weights only), a local vision-language model
(``AutoModelForImageTextToText``) and any OpenAI-compatible HTTP endpoint (vLLM, TGI, llama.cpp's server),
behind one :class:`~ieiw.backends.lm.base.ChatModel` interface; answers can be held to a pattern
(:mod:`ieiw.backends.lm.constrain`). Used by ``ieiw instructions expand`` and the ``vlm-judge`` scorer
(docs/language-models.md)."""
