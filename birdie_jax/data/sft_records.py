"""Instruction-tuning records: the JSONL format, the chat template, their tokens, the `sft` section.

    conversations = read_records("train.jsonl")      # ConfigError (one line) on the first bad one
    example = encode(conversations[0], tokenizer)   # prompt ids, target ids, scored (per target)

Records, one JSON object per line (blank lines skipped; both kinds may share a file):
    {"prompt": "...", "response": "..."}                    one exchange
    {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
A prompt/response record is the conversation [user: prompt, assistant: response]. Every record
needs at least one assistant message, and no assistant message (response) may be empty: a record
that breaks a rule stops the run with one line naming the file, the line and the rule.

The template (CHAT_TEMPLATE), message by message; each part is tokenized on its own:
    system      "System: {content}\\n"                   context
    user        "User: {content}\\n"                     context
    assistant   "Assistant: "                           context (the header)
                "{content}" + <eos>                     target: the loss is on these tokens only
So `[system S, user U1, assistant A1, user U2, assistant A2]` is the text
    System: S\\nUser: U1\\nAssistant: A1<eos>User: U2\\nAssistant: A2<eos>
in which only A1<eos> and A2<eos> are trained on. The example's prompt is everything before the
first assistant content ("System: S\\nUser: U1\\nAssistant: "); its target is the rest, with the
later context parts (U2's line and its header) unscored: a multi-turn record trains every
assistant turn in one example, the later turns reading the earlier ones causally. How the prompt
sits in a row is the run's layout (`train/sft_data.py`): in the bidirectional prefix (Birdie
curricula, `<prefix_lm>` first), or as causal context after <begin> (next-token runs). At
inference the prompt is `prompt_ids(prompt, tokenizer)` (one turn) laid out the same way;
generation stops at <eos>.

The `sft` config section (`default_settings`) says where the records and the starting run are and
how examples are laid out; `birdie_jax.finetune` fills `data` and `init_from` from its flags.
"""
from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import json

import ml_collections
import numpy as np

from birdie_jax.data import special_tokens
from birdie_jax.data.tokenizer import Tokenizer
from birdie_jax.errors import ConfigError

ROLES = ("system", "user", "assistant")
HEADERS = {"system": "System: ", "user": "User: ", "assistant": "Assistant: "}
CHAT_TEMPLATE = "chat-v1"  # the template's name, pinned in a fine-tuned run's sft.json
LAYOUTS = ("auto", "prefix", "continuation")
_FORMAT = ('a record is {"prompt": str, "response": str} or {"messages": [{"role": '
           '"system"|"user"|"assistant", "content": str}, ...]}')

Message = tuple[str, str]  # (role, content)


def default_settings() -> ml_collections.ConfigDict:
  """The instruction-tuning keys at their defaults (unused by pre-training)."""
  c = ml_collections.ConfigDict()
  c.data = ""               # JSONL file of (prompt, response) / chat records (finetune --data)
  c.init_from = ""          # pre-trained run whose latest params start it (finetune --init_from)
  c.val_fraction = 0.1      # share of records held out for the validation loss (at least 1)
  c.layout = "auto"         # auto (as eval.layout: prefix unless ntp on a causal model) | prefix |
                            # continuation: where the prompt sits (train/sft_data.py)
  c.paradigm = "prefix_lm"  # objective class whose paradigm token starts a prefix-layout prompt,
                            # if the run's curriculum trained it ('': none)
  return c


def validate_settings(settings: ml_collections.ConfigDict) -> None:
  """ConfigError naming the first impossible value of an `sft` section."""
  if not 0.0 < settings.val_fraction < 1.0:
    raise ConfigError(f"sft.val_fraction must be in (0, 1), got {settings.val_fraction}")
  if settings.layout not in LAYOUTS:
    raise ConfigError(f"sft.layout must be one of {LAYOUTS}, got {settings.layout!r}")
  if settings.paradigm and settings.paradigm not in special_tokens.PARADIGMS:
    raise ConfigError(f"sft.paradigm must be '' or one of {tuple(special_tokens.PARADIGMS)}, "
                      f"got {settings.paradigm!r}")


def to_conversation(record, where: str = "a record") -> list[Message]:
  """The messages of one parsed record; ConfigError naming `where` for a bad one."""
  if not isinstance(record, dict):
    raise ConfigError(f"{where}: not a JSON object; {_FORMAT}")
  if "messages" in record:
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
      raise ConfigError(f"{where}: \"messages\" must be a non-empty list; {_FORMAT}")
    out = []
    for i, message in enumerate(messages, 1):
      if (not isinstance(message, dict) or not isinstance(message.get("content"), str)
          or "role" not in message):
        raise ConfigError(f"{where}: message {i} needs a \"role\" and a string \"content\"; "
                          f"{_FORMAT}")
      if message["role"] not in ROLES:
        raise ConfigError(f"{where}: message {i} has role {message['role']!r}; roles are "
                          f"{', '.join(ROLES)}")
      if message["role"] == "assistant" and not message["content"].strip():
        raise ConfigError(f"{where}: message {i} (assistant) is empty: nothing to learn")
      out.append((message["role"], message["content"]))
    if not any(role == "assistant" for role, _ in out):
      raise ConfigError(f"{where}: no assistant message: nothing to learn")
    return out
  prompt, response = record.get("prompt"), record.get("response")
  if not isinstance(prompt, str) or not isinstance(response, str):
    keys = ", ".join(map(repr, record)) or "none"
    raise ConfigError(f"{where}: needs string \"prompt\" and \"response\" (keys: {keys}); "
                      f"{_FORMAT}")
  if not response.strip():
    raise ConfigError(f"{where}: empty response: nothing to learn")
  return [("user", prompt), ("assistant", response)]


def read_records(path: str) -> list[list[Message]]:
  """Every record of the JSONL file `path` as a conversation, in file order.

  Raises:
    ConfigError: the file cannot be read, holds no record, or a record breaks the format (the
      first one: file, line and rule in one line).
  """
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise ConfigError(f"cannot read the fine-tuning data {path} ({e.strerror or e})") from None
  conversations = []
  for number, raw in enumerate(data.split(b"\n"), 1):
    where = f"{path} line {number}"
    try:
      line = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
      raise ConfigError(f"{where}: not UTF-8 text") from None
    if not line:
      continue
    try:
      record = json.loads(line)
    except ValueError as e:
      raise ConfigError(f"{where}: not JSON ({e.msg}); {_FORMAT}") from None
    conversations.append(to_conversation(record, where))
  if not conversations:
    raise ConfigError(f"the fine-tuning data {path} holds no records; {_FORMAT}")
  return conversations


def parts(conversation: Sequence[Message]) -> list[tuple[str, bool]]:
  """The template's text parts in order, each with whether it is a target (an assistant's
  content, followed by <eos>)."""
  out = []
  for role, content in conversation:
    if role == "assistant":
      out += [(HEADERS[role], False), (content, True)]
    else:
      out.append((f"{HEADERS[role]}{content}\n", False))
  return out


def prompt_ids(prompt: str, tokenizer: Tokenizer, system: str = "") -> np.ndarray:
  """The ids before the reply to a one-turn `prompt`, as `encode` makes an example's prompt:
  what the model reads at inference."""
  head = [("system", system)] if system else []
  return encode([*head, ("user", prompt), ("assistant", "-")], tokenizer).prompt


@dataclasses.dataclass(frozen=True)
class Example:
  """One conversation's tokens: the prompt (before the first reply), the target after it, and
  the target tokens that are trained on (1: an assistant's content or <eos>, 0: context)."""
  prompt: np.ndarray  # int32
  target: np.ndarray  # int32
  scored: np.ndarray  # float32, like target


def encode(conversation: Sequence[Message], tokenizer: Tokenizer) -> Example:
  """The tokens of one conversation under the template (each part encoded on its own)."""
  eos = tokenizer.special_id(special_tokens.EOS)
  pieces = parts(conversation)
  first = next(i for i, (_, target) in enumerate(pieces) if target)
  prompt = [tokenizer.encode(text) for text, _ in pieces[:first]]
  target, scored = [], []
  for text, is_target in pieces[first:]:
    ids = tokenizer.encode(text)
    if is_target:
      ids = np.append(ids, eos)
    target.append(ids)
    scored.append(np.full(len(ids), float(is_target), np.float32))
  return Example(prompt=np.concatenate(prompt or [np.zeros(0)]).astype(np.int32),
                 target=np.concatenate(target).astype(np.int32),
                 scored=np.concatenate(scored))
