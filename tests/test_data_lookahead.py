"""The lookahead iterator: the same elements and checkpoint states as the plain iterator, whatever
mix of reads, read-aheads, saves, restores and mixture changes happens, and exact Orbax resume."""
import grain
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import orbax.checkpoint as ocp

from birdie_jax.data.lookahead import Lookahead
from birdie_jax.data.pipeline import make_train_dataset
from birdie_jax.data.pipeline import set_mixture_weights
from birdie_jax.data.tokenizer import ByteTokenizer
from birdie_jax.data.curriculum import make_mixture

_OPS = st.lists(st.sampled_from(["next", "prefetch", "save", "restore"]), max_size=40)


def _dataset():
  return grain.MapDataset.range(50).shuffle(seed=3).repeat().to_iter_dataset()


@settings(max_examples=25, deadline=None)
@given(_OPS)
def test_lookahead_matches_the_plain_iterator(ops):
  plain, ahead = iter(_dataset()), Lookahead(iter(_dataset()))
  saved = [(plain.get_state(), ahead.get_state())]
  for op in ops:
    if op == "next":
      assert next(ahead) == next(plain)
    elif op == "prefetch":
      ahead.prefetch()  # no visible change
    elif op == "save":
      saved.append((plain.get_state(), ahead.get_state()))
    else:
      plain_state, ahead_state = saved[len(saved) // 2]
      plain.set_state(plain_state)
      ahead.set_state(ahead_state)
    assert ahead.get_state() == plain.get_state()
  assert [next(ahead) for _ in range(5)] == [next(plain) for _ in range(5)]


def _mixture_iterator(seq_len=256):
  docs = ["".join(chr(97 + (i * j) % 26) for j in range(300)) for i in range(20)]
  tokenizer = ByteTokenizer()
  mixture = make_mixture(tokenizer, curriculum="fixed_ratio", seq_len=seq_len)
  dataset = make_train_dataset(docs, tokenizer, seq_len=seq_len, batch_size=2, seed=0,
                               make_example=mixture)
  return iter(dataset), len(mixture.names)


def test_new_mixture_weights_drop_the_batch_read_ahead():
  """A batch read ahead under the old weights is drawn again under the new ones."""
  plain, n = _mixture_iterator()
  ahead, _ = _mixture_iterator()
  ahead = Lookahead(ahead)
  for _ in range(2):
    np.testing.assert_array_equal(next(ahead)["inputs"], next(plain)["inputs"])
  ahead.prefetch()
  weights = np.eye(n)[0]
  set_mixture_weights(plain, weights)
  set_mixture_weights(ahead, weights)
  for _ in range(3):
    np.testing.assert_array_equal(next(ahead)["inputs"], next(plain)["inputs"])


def test_orbax_checkpoint_of_a_lookahead_resumes_exactly(tmp_path):
  ahead = Lookahead(iter(_dataset()))
  [next(ahead) for _ in range(7)]
  ahead.prefetch()
  expected = next(_resumable_copy(ahead))
  with ocp.CheckpointManager(tmp_path) as manager:
    manager.save(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(ahead)))
    manager.wait_until_finished()
    restored = Lookahead(iter(_dataset()))
    manager.restore(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
  assert next(restored) == next(ahead) == expected


def _resumable_copy(iterator):
  copy = iter(_dataset())
  copy.set_state(iterator.get_state())
  return copy
