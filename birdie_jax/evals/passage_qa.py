"""A SQuAD stand-in: template facts about people embedded in real prose, one question about them.

SQuAD is not available offline, so the passage is consecutive sentences of the held-out prose with
facts inserted at random sentence boundaries, one per person ("Mary Smith lives in Lisbon.",
"... works as a baker.", "... was born in 1957.", "... has a pet otter."); several people share each
attribute, so answering needs the right fact, not any city. The prompt follows Birdie's SQuAD
protocol, `"{context}\n\n{question}"` (plus a newline), zero-shot with greedy decoding; the target
is the answer and a newline. Scores: SQuAD-normalised answer-contains and F1, of the first
non-empty line of the output (Birdie scores its whole 128-token output; the first line keeps a
model from scoring by reciting the passage). Difficulty: prompt tokens; one fact per 128 of them
(at least 2).
"""
from __future__ import annotations

import functools

import numpy as np

from birdie_jax.evals import resources
from birdie_jax.evals import scoring
from birdie_jax.evals.task import DoesNotFit, Example, GENERATE, Task

LENGTHS = (128, 256, 512, 1024, 2048, 4096)  # prompt tokens
TOKENS_PER_FACT = 128
CITIES = ("Lisbon", "Madrid", "Paris", "Berlin", "Vienna", "Prague", "Warsaw", "Oslo", "Dublin",
          "Athens", "Rome", "Cairo", "Nairobi", "Lagos", "Tokyo", "Seoul", "Manila", "Jakarta",
          "Sydney", "Toronto", "Chicago", "Boston", "Denver", "Houston", "Lima", "Bogota",
          "Santiago", "Havana", "Montreal", "Helsinki")
JOBS = ("baker", "carpenter", "dentist", "engineer", "farmer", "gardener", "journalist", "lawyer",
        "librarian", "mechanic", "musician", "nurse", "pharmacist", "pilot", "plumber",
        "photographer", "surgeon", "tailor", "teacher", "translator", "veterinarian", "architect",
        "electrician", "chemist", "sailor", "painter", "banker", "butcher", "welder", "optician")
PETS = ("cat", "dog", "parrot", "rabbit", "hamster", "turtle", "goldfish", "ferret", "lizard",
        "snake", "canary", "pony", "goat", "otter", "tortoise", "owl", "frog", "mouse", "pig",
        "llama")
YEARS = tuple(str(y) for y in range(1900, 2000))
ATTRIBUTES = {  # name: (values, fact template, question template)
    "city": (CITIES, "{name} lives in {value}.", "Where does {name} live?"),
    "job": (JOBS, "{name} works as a {value}.", "What is the job of {name}?"),
    "year": (YEARS, "{name} was born in {value}.", "In what year was {name} born?"),
    "pet": (PETS, "{name} has a pet {value}.", "What pet does {name} have?"),
}


def fact(attribute: str, name: str, value: str) -> str:
  """The sentence stating the fact ('an' before a vowel)."""
  text = ATTRIBUTES[attribute][1].format(name=name, value=value)
  return text.replace(" a a", " an a").replace(" a e", " an e").replace(" a o", " an o")


class PassageQA(Task):
  """Answer a question about one of several people described in a passage of real prose."""

  name = "passage_qa"
  kind = GENERATE
  metrics = ("contains", "f1")
  difficulty_label = "prompt tokens"
  candidates = LENGTHS

  @functools.cached_property
  def _longest_target(self) -> int:
    values = [v for values, _, _ in ATTRIBUTES.values() for v in values]
    return max(len(self.ctx.encode(v + "\n")) for v in values)

  def fits(self, difficulty: int) -> bool:
    """The prompt length plus the longest answer fit."""
    return difficulty + self._longest_target <= self.ctx.room

  @functools.cached_property
  def _sentence_ids(self) -> list[list[np.ndarray]]:
    return [self.ctx.tokenizer.encode_batch(sentences)
            for sentences in resources.passage_sentences()]

  def _person(self, rng: np.random.Generator) -> str:
    first, last = resources.first_names(), resources.last_names()
    return f"{first[rng.integers(len(first))]} {last[rng.integers(len(last))]}"

  def example(self, rng: np.random.Generator, difficulty: int) -> Example:
    """Prose sentences and facts filling `difficulty` tokens, then a question about one fact."""
    people: dict[str, tuple[str, str]] = {}
    while len(people) < max(2, difficulty // TOKENS_PER_FACT):
      attribute = list(ATTRIBUTES)[rng.integers(len(ATTRIBUTES))]
      values = ATTRIBUTES[attribute][0]
      people.setdefault(self._person(rng), (attribute, values[rng.integers(len(values))]))
    facts = [fact(a, name, v) for name, (a, v) in people.items()]
    asked = list(people)[rng.integers(len(people))]
    attribute, answer = people[asked]
    tail = "\n\n" + ATTRIBUTES[attribute][2].format(name=asked) + "\n"
    budget = difficulty - sum(len(self.ctx.encode(f + " ")) for f in facts)
    budget -= len(self.ctx.encode(tail))
    passage = int(rng.integers(len(self._sentence_ids)))
    start = int(rng.integers(len(self._sentence_ids[passage])))
    prose = []
    while True:  # consecutive sentences (on into the next passages) while they fit the budget
      ids = self._sentence_ids[passage]
      if start >= len(ids):
        passage, start = (passage + 1) % len(self._sentence_ids), 0
        continue
      cost = len(ids[start]) + 1
      if cost > budget:
        break
      prose.append(resources.passage_sentences()[passage][start])
      budget -= cost
      start += 1
    slots = np.sort(rng.integers(0, len(prose) + 1, len(facts)))
    for offset, (slot, text) in enumerate(zip(slots, rng.permutation(facts))):
      prose.insert(int(slot) + offset, str(text))
    prompt = self.ctx.encode(" ".join(prose) + tail)
    while len(prompt) > difficulty:  # merges across sentences can shift the count
      removable = [i for i, s in enumerate(prose) if s not in facts]
      if not removable:
        raise DoesNotFit(f"the facts alone exceed {difficulty} tokens")
      del prose[removable[-1]]
      prompt = self.ctx.encode(" ".join(prose) + tail)
    return Example(prompt=prompt, target=self.ctx.encode(answer + "\n"), answers=(answer,))

  def score(self, example: Example, output: np.ndarray) -> dict[str, float]:
    """Answer-contains and SQuAD F1 of the output's first line."""
    line = scoring.first_line(self.ctx.tokenizer.decode(output))
    return {"contains": max(scoring.contains(line, a) for a in example.answers),
            "f1": max(scoring.f1(line, a) for a in example.answers)}

  def chance(self, difficulty: int) -> float:
    """A random value of the asked attribute: the mean of 1 / (number of values) over attributes
    (each fact's attribute is uniform, and so is the person asked about)."""
    del difficulty
    return float(np.mean([1.0 / len(values) for values, _, _ in ATTRIBUTES.values()]))
