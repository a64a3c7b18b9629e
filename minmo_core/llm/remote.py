"""A remote LLM for composed mode: any OpenAI-compatible streaming chat endpoint (vLLM,
SGLang, llama.cpp's server, Ollama), so a 7B+ model can run on a bigger GPU box while audio,
echo cancellation and the voice stay on the desktop.

``RemoteChatLLM`` has the part of ``ChatLLM``'s interface the engine uses: ``stream``
yields ``TokenEvent`` objects (one per streamed text piece; there are no token ids or hidden
states across the wire), ``prompt_tokens`` estimates the prompt's length for the context
budget, and ``reset_cache`` is a no-op (the server keeps its own). A lost connection, a
refused one or an HTTP error becomes a ``RemoteLLMError`` naming the server; the next turn
opens a new connection.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from minmo_core.config import LLMConfig
from minmo_core.errors import ConfigError, MinMoError, reason
from minmo_core.llm.chat import TokenEvent

CHARS_PER_TOKEN = 3  # a cautious estimate for the context budget (no tokenizer here)
NO_ID = -1  # remote pieces carry text, not token ids


class RemoteLLMError(MinMoError):
    """The remote LLM server failed, refused or went away."""


@dataclass(frozen=True)
class RemoteLLMSettings:
    url: str  # the API base, e.g. "http://gpu-box:8000/v1"
    model: str  # the served model's name
    api_key: str | None = None
    timeout_s: float = 30.0  # to connect, and between two streamed pieces
    context_tokens: int = 32768  # the served model's context length


class RemoteChatLLM:
    def __init__(self, settings: RemoteLLMSettings, config: LLMConfig | None = None) -> None:
        parts = urlsplit(settings.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"the LLM server address {settings.url!r} is not an http(s) URL")
        if not settings.model:
            raise ConfigError("the remote LLM needs the served model's name")
        self.settings = settings
        self.config = config or LLMConfig()
        self.stop_ids: set[int] = set()
        self._parts = parts

    @property
    def context_limit(self) -> int:
        return self.settings.context_tokens

    def prompt_tokens(self, messages: Sequence[Mapping[str, str]]) -> int:
        return sum(len(m["content"]) + 8 for m in messages) // CHARS_PER_TOKEN + 1

    def reset_cache(self) -> None:
        """Nothing to forget here: the server caches prompts itself."""

    def stream(
        self,
        prompt: Sequence[Mapping[str, str]],
        *,
        stop: Callable[[], bool] | None = None,
        seed: int | None = None,
        max_new_tokens: int | None = None,
        **_: object,
    ) -> Iterator[TokenEvent]:
        """The reply to the chat ``prompt`` (role/content dicts), piece by piece."""
        body = {
            "model": self.settings.model,
            "messages": [dict(m) for m in prompt],
            "stream": True,
            "max_tokens": max_new_tokens or self.config.max_new_tokens,
            "temperature": self.config.temperature,
            "top_p": self.config.top_p,
        }
        if seed is not None:
            body["seed"] = seed
        connection = self._connect()
        try:
            response = self._post(connection, body)
            finish = None
            for data in _sse_data(response, self._where):
                if stop is not None and stop():
                    return
                if data == "[DONE]":
                    break
                try:
                    choice = json.loads(data)["choices"][0]
                except (ValueError, KeyError, IndexError, TypeError) as err:
                    raise RemoteLLMError(f"{self._where} sent a malformed chunk: {err}") from err
                text = (choice.get("delta") or {}).get("content") or ""
                finish = choice.get("finish_reason")
                if text:
                    yield TokenEvent(NO_ID, text, None)
                if finish:
                    break
            else:
                raise RemoteLLMError(
                    f"{self._where} closed the connection in the middle of a reply"
                )
            yield TokenEvent(NO_ID, "", None, "length" if finish == "length" else "stop")
        finally:
            connection.close()

    @property
    def _where(self) -> str:
        return f"the LLM server at {self.settings.url}"

    def _connect(self) -> http.client.HTTPConnection:
        kind = (
            http.client.HTTPSConnection
            if self._parts.scheme == "https"
            else http.client.HTTPConnection
        )
        return kind(self._parts.hostname, self._parts.port, timeout=self.settings.timeout_s)

    def _post(self, connection: http.client.HTTPConnection, body: dict):
        path = self._parts.path.rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.settings.api_key:
            headers["Authorization"] = f"Bearer {self.settings.api_key}"
        try:
            connection.request("POST", path, json.dumps(body), headers)
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as err:
            raise RemoteLLMError(f"cannot reach {self._where}: {reason(err)}") from err
        if response.status != 200:
            detail = response.read(300).decode("utf-8", "replace").strip().splitlines()
            raise RemoteLLMError(
                f"{self._where} answered HTTP {response.status}"
                + (f": {detail[0]}" if detail else "")
            )
        return response


def _sse_data(response, where: str) -> Iterator[str]:
    """The ``data:`` fields of a server-sent event stream, as they arrive."""
    while True:
        try:
            line = response.readline()
        except (TimeoutError, OSError, http.client.HTTPException) as err:
            raise RemoteLLMError(f"lost the connection to {where}: {reason(err)}") from err
        if not line:
            return
        line = line.decode("utf-8", "replace").strip()
        if line.startswith("data:"):
            yield line[5:].strip()
