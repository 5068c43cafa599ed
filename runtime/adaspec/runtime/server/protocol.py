"""OpenAI API request bodies and the OpenAI error shape (what clients send and get back)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, ValidationError

Number = StrictInt | StrictFloat


class APIError(Exception):
    """An error answered in the OpenAI shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.kind = kind
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body of the response."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}}


class _Body(BaseModel):
    # Unknown fields are ignored as OpenAI's servers do (clients send `user`, penalties at 0, ...);
    # known ones this server cannot honour are refused by `check_unsupported`.
    model_config = ConfigDict(extra="allow")


class StreamOptions(BaseModel):
    """`stream_options`."""

    model_config = ConfigDict(extra="forbid")
    include_usage: StrictBool = False


class _Sampling(_Body):
    model: str | None = None
    max_tokens: StrictInt | None = None
    max_completion_tokens: StrictInt | None = None
    temperature: Number | None = None
    top_p: Number | None = None
    top_k: StrictInt | None = None  # extension (vLLM's too)
    seed: StrictInt | None = None
    stop: str | list[str] | None = None
    n: StrictInt = 1
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    # extensions, off by default
    speculation_stats: StrictBool = False  # per-response spec-decode statistics
    return_token_ids: StrictBool = False  # generated token ids beside the text
    workload_tag: str | None = Field(default=None, max_length=64)  # keys the suffix index


class CompletionRequest(_Sampling):
    """`POST /v1/completions`."""

    prompt: str | list[StrictInt] | list[str] | list[list[StrictInt]]
    echo: StrictBool = False
    logprobs: StrictInt | None = None
    best_of: StrictInt | None = None
    suffix: str | None = None


class TextPart(BaseModel):
    """A text part of a message's content."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        """The message's content as one string."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ChatRequest(_Sampling):
    """`POST /v1/chat/completions`."""

    messages: list[Message] = Field(min_length=1)
    logprobs: StrictBool | None = None
    tools: list[Any] | None = None


def validation_error(exc: ValidationError) -> APIError:
    """A 400 naming the first field that failed validation."""
    first = exc.errors()[0]
    loc = [str(p) for p in first["loc"] if str(p) not in ("str", "int", "float") and "[" not in str(p)]
    param = ".".join(loc) or None
    return APIError(400, f"{param or 'body'}: {first['msg']}", param=param)


def check_unsupported(body: _Sampling) -> None:
    """Refuse (400, naming the field) options this server accepts in the schema but cannot honour."""
    if body.n != 1:
        raise APIError(400, f"n must be 1 (got {body.n}); one choice per request", param="n")
    if isinstance(body, CompletionRequest):
        if body.echo:
            raise APIError(400, "echo is not supported", param="echo")
        if body.logprobs:
            raise APIError(400, "logprobs are not supported", param="logprobs")
        if body.best_of not in (None, 1):
            raise APIError(400, "best_of must be 1", param="best_of")
        if body.suffix:
            raise APIError(400, "suffix is not supported", param="suffix")
    if isinstance(body, ChatRequest):
        if body.logprobs:
            raise APIError(400, "logprobs are not supported", param="logprobs")
        if body.tools:
            raise APIError(400, "tools are not supported", param="tools")
