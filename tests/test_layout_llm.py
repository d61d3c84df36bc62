"""The optional LLM layout provider: a fake OpenAI-compatible server on 127.0.0.1 and stubbed transports."""

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from mudi.errors import MudiError
from mudi.sampling.layout_llm import chat_completions_url, llm_layout_or_none, parse_llm_reply, request_layout

PHRASES = ["olis monster toy", "hta drink can"]


def _completion(content: str) -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()


@pytest.fixture
def fake_server():
    """An OpenAI-compatible chat endpoint answering the content in ``state["reply"]``; records requests."""
    state = {"reply": "", "requests": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state["requests"].append((self.path, dict(self.headers), json.loads(body)))
            out = _completion(state["reply"])
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield state
    server.shutdown()
    server.server_close()


def test_layout_from_a_fake_server(fake_server):
    fake_server["reply"] = ('Here is the layout:\n```json\n{"olis monster toy": [0.3, 0.3, 0.7, 0.7], '
                            '"hta drink can": [0.3, 0.7, 0.7, 0.9]}\n```')
    boxes = request_layout("[V1] sitting on [V2]", PHRASES, fake_server["url"], model="test-model", api_key="k")
    assert boxes == [(0.3, 0.3, 0.7, 0.7), (0.3, 0.7, 0.7, 0.9)]
    path, headers, body = fake_server["requests"][0]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer k"
    assert body["model"] == "test-model" and body["temperature"] == 0
    assert "[V1] sitting on [V2]" in body["messages"][1]["content"]
    assert json.dumps(PHRASES) in body["messages"][1]["content"]


def test_malformed_reply_from_server_falls_back_with_a_warning(fake_server, caplog):
    fake_server["reply"] = "I would put the toy on top of the can."
    with caplog.at_level(logging.WARNING, logger="mudi.layout_llm"):
        assert llm_layout_or_none("p", PHRASES, fake_server["url"]) is None
    assert "falling back to a random layout" in caplog.text and "holds no JSON" in caplog.text


@pytest.mark.parametrize("content, message", [
    ('{"olis monster toy": [300, 700, 300, 700], "hta drink can": [300, 700, 700, 900]}', "not normalised"),
    ('{"olis monster toy": [0.1, 0.1, 0.5, 0.5]}', "no box for subject"),
    ('{"olis": [0.1, 0.1, 0.5, 0.5], "hta": [0.5, 0.5, 0.4, 0.9]}', "empty"),
    ('{"olis": [0.1, 0.1, 0.5, 0.5], "hta": ', "not valid JSON"),
])
def test_parse_llm_reply_rejects_malformed_boxes(content, message):
    with pytest.raises(MudiError, match=message):
        parse_llm_reply(content, PHRASES)


def test_parse_llm_reply_accepts_identifiers_and_placeholders():
    assert parse_llm_reply('{"V2": [0, 0, 1, 0.5], "olis": [0, 0.5, 1, 1]}', PHRASES) == [
        (0, 0.5, 1, 1), (0, 0, 1, 0.5)]


def test_transport_failures_fall_back():
    def broken(url, body, headers, timeout):
        raise OSError("connection refused")

    def not_a_completion(url, body, headers, timeout):
        return b'{"error": "model not found"}'

    assert llm_layout_or_none("p", PHRASES, "http://127.0.0.1:9/v1", transport=broken) is None
    with pytest.raises(MudiError, match="did not answer like an OpenAI chat completion"):
        request_layout("p", PHRASES, "http://x/v1/chat/completions", transport=not_a_completion)


def test_chat_completions_url():
    assert chat_completions_url("http://h:8000/v1/") == "http://h:8000/v1/chat/completions"
    assert chat_completions_url("https://h/v1/chat/completions") == "https://h/v1/chat/completions"
    with pytest.raises(MudiError, match="must start with http"):
        chat_completions_url("h:8000")
