"""Names of the reserved special tokens, shared by every tokenizer in the same fixed order.

The list's position is the token id in both tokenizers (pad is 0), so code may rely on the ids
being stable across tokenizer kinds. Objectives receive ids through their parameters; they never
import this module (objectives sit below data).
"""
from __future__ import annotations

PAD = "<pad>"
UNK = "<unk>"
BOS = "<bos>"
EOS = "<eos>"
BEGIN = "<begin>"  # begin generating: separates an example's inputs X from its targets Y
GAP = "<gap>"  # spacer between packed examples (for Conv1D models)

# One paradigm token per objective class.
PARADIGMS = {
    "next_token_prediction": "<ntp>",
    "prefix_lm": "<prefix_lm>",
    "infilling": "<infilling>",
    "copying": "<copying>",
    "deshuffling": "<deshuffling>",
    "selective_copying": "<selective_copying>",
    "autoencoding": "<autoencoding>",
}
# Enough for one unique sentinel per span in every configuration of the paper's grid at 2048-token
# rows (the densest, infilling with 50% masked in spans of 3, needs 256).
NUM_SENTINELS = 256
SENTINELS = tuple(f"<sentinel_{i}>" for i in range(NUM_SENTINELS))
MARKERS = ("[COPY]", "[START]", "[END]", "[CONTEXT]", "[SEP]", "[DONE]")

# SentencePiece's own meta pieces first (pad, unk, bos, eos), then the control symbols.
META = (PAD, UNK, BOS, EOS)
CONTROL = (BEGIN, *PARADIGMS.values(), *SENTINELS, *MARKERS, GAP)
ALL = META + CONTROL
