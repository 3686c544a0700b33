"""The testbed's character-level tokenizer, built locally and wrapped as a Hugging Face tokenizer.

One token per character: digits, the arithmetic operators, the answer marker ``#``, space, a
little punctuation and the lowercase letters, plus four special tokens. It is a ``tokenizers``
``WordLevel`` model whose pre-tokenizer isolates every character, with a ``Fuse`` decoder so
that ``decode`` concatenates the characters back without inserting spaces: decoding the ids of a
text gives the text exactly (for text made of vocabulary characters).

Like Qwen2.5, it adds no special tokens when encoding: a prompt is exactly its characters, and
generation stops at ``eos_token`` (``</s>``).
"""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
# Order is part of the checkpoint (ids index the embedding matrix): append, never reorder.
CHARACTERS = string.digits + "+-*/=#" + " .,:;?!()" + string.ascii_lowercase + "\n"


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The testbed tokenizer (ids: specials first, then :data:`CHARACTERS` in order).

    Returns:
        A ``PreTrainedTokenizerFast`` with pad/bos/eos/unk set and left padding (the padding
        side generation wants); ``save_pretrained`` it and ``AutoTokenizer`` loads it back.
    """
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + tuple(CHARACTERS))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # Every single character (newline included) is its own pre-token; WordLevel maps it to its
    # id or to <unk>. No normalizer, so spaces are kept as tokens.
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    # The default WordLevel decoding joins tokens with spaces; Fuse concatenates them instead.
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=256,
    )
    return tok
