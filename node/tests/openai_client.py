"""Drives a cocoon client node's OpenAI-compatible API with the official `openai`
package. Usage: openai_client.py BASE_URL. Prints one JSON line of results."""
import json
import sys

import openai

base = sys.argv[1]
client = openai.OpenAI(base_url=base, api_key="unused")

models = client.models.list()
model = models.data[0].id

whole = client.completions.create(model=model, prompt="Once upon a time", max_tokens=8, temperature=0)
streamed = "".join(
    c.choices[0].text
    for c in client.completions.create(
        model=model, prompt="Once upon a time", max_tokens=8, temperature=0, stream=True
    )
)

messages = [{"role": "user", "content": "What is the capital of France?"}]
chat = client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0)
chat_stream = "".join(
    (c.choices[0].delta.content or "")
    for c in client.chat.completions.create(
        model=model, messages=messages, max_tokens=12, temperature=0, stream=True
    )
    if c.choices
)

try:
    client.chat.completions.create(model="no-such-model", messages=messages, max_tokens=4)
    status, code = None, None
except openai.APIStatusError as e:
    status, code = e.status_code, (e.body or {}).get("code")

print(json.dumps({
    "model": model,
    "whole_text": whole.choices[0].text,
    "stream_text": streamed,
    "completion_tokens": whole.usage.completion_tokens,
    "finish_reason": whole.choices[0].finish_reason,
    "chat_whole": chat.choices[0].message.content,
    "chat_stream": chat_stream,
    "error_status": status,
    "error_code": code,
}))
