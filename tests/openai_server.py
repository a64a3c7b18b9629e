"""A local OpenAI-compatible streaming chat server for tests, on 127.0.0.1 only, backed by
a ChatLLM. ``drop_after`` closes the connection after that many pieces (a lost link);
``fail_with`` answers that HTTP status instead."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from minmo_core.llm.chat import ChatLLM


class OpenAIServer:
    def __init__(self, llm: ChatLLM) -> None:
        self.llm = llm
        self.drop_after: int | None = None
        self.fail_with: int | None = None
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet test output
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                if not self.path.endswith("/chat/completions"):
                    self.send_error(404)
                    return
                if server.fail_with is not None:
                    self.send_error(server.fail_with, "model overloaded")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                with server._lock:  # one generation at a time: the model is not shared
                    self._stream(body)

            def _stream(self, body: dict) -> None:
                events = server.llm.stream(
                    body["messages"], seed=body.get("seed"), max_new_tokens=body["max_tokens"]
                )
                for sent, event in enumerate(events):
                    if server.drop_after is not None and sent == server.drop_after:
                        self.wfile.flush()
                        self.connection.close()
                        return
                    choice = {"index": 0, "delta": {"content": event.text}, "finish_reason": None}
                    if event.finish_reason:
                        choice["finish_reason"] = event.finish_reason
                    chunk = {"object": "chat.completion.chunk", "choices": [choice]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> OpenAIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)
