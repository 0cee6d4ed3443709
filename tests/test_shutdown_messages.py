"""Shutdown of ``otel-gateway serve`` with Anthropic Messages API streams open: at the end of
``--graceful-timeout`` each ends, as a chat stream does, with a last error event, in Anthropic's
event shape (``event: error``, ``overloaded_error``, which the anthropic SDK raises), and is
recorded as ``cancelled``. Before, the stream was cut without a final event.

The fake Anthropic upstream streams slowly: 100 text deltas, half a second apart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import orjson
import pytest
from fakes import FakeUpstream, Reply, anthropic_text_stream
from servers import serve, start_gateway_process, wait_until_healthy
from test_shutdown import exit_code, records

SHUTTING_DOWN = {"type": "error", "error": {
    "type": "overloaded_error", "message": "The gateway is shutting down; this stream was ended before it finished."}}
BODY = {"model": "claude/sonnet", "max_tokens": 64, "stream": True, "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture(scope="module")
def slow_anthropic() -> Iterator[str]:
    fake = FakeUpstream(Reply(events=anthropic_text_stream(["word "] * 100), event_delay=0.5))
    with serve(fake.app) as url:
        yield url


def write_config(tmp_path: Path, upstream: str) -> Path:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"""\
type: gateway-providers-config
providers:
  - {{name: claude, type: anthropic, base_url: "{upstream}", api_key: sk-ant-test-0123456789,
     models: {{sonnet: claude-sonnet-4-5-20250929}}}}
---
type: gateway-logging-config
store: "sqlite:////{tmp_path / 'logs.db'}"
spool_dir: "{tmp_path / 'spool'}"
batch_size: 1000
flush_interval_ms: 600000
""")
    return config


class RawStream:
    """A Messages stream read with httpx, every line kept: ``started`` once its first event came."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.lines: list[str] = []
        self.request_id = ""
        self.started = asyncio.Event()
        self.task = asyncio.create_task(self._read(client))

    async def _read(self, client: httpx.AsyncClient) -> None:
        async with client.stream("POST", "/v1/messages", json=BODY) as response:
            assert response.status_code == 200
            self.request_id = response.headers["x-gateway-request-id"]
            async for line in response.aiter_lines():
                self.lines.append(line)
                self.started.set()


class SdkStream:
    """A Messages stream read with the anthropic SDK: the error it raised, if any."""

    def __init__(self, client: anthropic.AsyncAnthropic) -> None:
        self.texts: list[str] = []
        self.request_id = ""
        self.started = asyncio.Event()
        self.task = asyncio.create_task(self._read(client))

    async def _read(self, client: anthropic.AsyncAnthropic) -> None:
        messages = BODY["messages"]
        async with client.messages.stream(model="claude/sonnet", max_tokens=64,
                                          messages=messages) as stream:  # type: ignore[arg-type]
            self.request_id = stream.response.headers["x-gateway-request-id"]
            async for text in stream.text_stream:
                self.texts.append(text)
                self.started.set()


async def test_sigterm_ends_messages_streams_with_an_anthropic_error_event(tmp_path: Path, slow_anthropic: str) -> None:
    process, url = start_gateway_process(write_config(tmp_path, slow_anthropic), tmp_path, "--graceful-timeout", "1")
    try:
        await asyncio.to_thread(wait_until_healthy, process, url, 30)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http, anthropic.AsyncAnthropic(
                base_url=url, api_key="client-key", max_retries=0, timeout=30) as sdk:
            raw, typed = RawStream(http), SdkStream(sdk)
            async with asyncio.timeout(10):
                await asyncio.gather(raw.started.wait(), typed.started.wait())
            started = time.monotonic()
            process.terminate()  # SIGTERM
            assert await exit_code(process, timeout=10) in (0, -15)
            took = time.monotonic() - started
            async with asyncio.timeout(5):
                await raw.task  # the answer is complete
                with pytest.raises(anthropic.APIStatusError) as raised:
                    await typed.task
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    print(f"\nexited {took:.2f} s after SIGTERM with --graceful-timeout 1")
    assert took < 1 + 2.5
    assert raw.lines[-3:] == ["event: error", "data: " + orjson.dumps(SHUTTING_DOWN).decode(), ""]
    assert "event: message_stop" not in raw.lines
    assert raised.value.body == SHUTTING_DOWN
    assert typed.texts and all(text == "word " for text in typed.texts)
    assert records(tmp_path) == {raw.request_id: "cancelled", typed.request_id: "cancelled"}
