import torch

from engine.sampling import SamplingParams, apply_repetition_penalty, sample
from engine.text_stream import TextStream

LOGITS = torch.tensor([1.0, 3.0, 2.5, -1.0])
NONE_SEEN = torch.empty(0, dtype=torch.long)


def test_greedy_and_degenerate_sampling_agree():
    g = torch.Generator().manual_seed(0)
    assert sample(LOGITS.clone(), SamplingParams(), NONE_SEEN, g) == 1
    assert sample(LOGITS.clone(), SamplingParams(temperature=1.0, top_k=1), NONE_SEEN, g) == 1
    assert sample(LOGITS.clone(), SamplingParams(temperature=1.0, top_p=1e-6), NONE_SEEN, g) == 1


def test_top_k_never_picks_outside_the_k_best():
    g = torch.Generator().manual_seed(0)
    picks = {sample(LOGITS.clone(), SamplingParams(temperature=5.0, top_k=2), NONE_SEEN, g) for _ in range(200)}
    assert picks == {1, 2}


def test_top_p_keeps_the_token_that_crosses_the_threshold():
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([0.0, 10.0, 9.0, -10.0])  # p ≈ 0.73, 0.27, ...
    picks = {sample(logits.clone(), SamplingParams(temperature=1.0, top_p=0.8), NONE_SEEN, g) for _ in range(300)}
    assert picks == {1, 2}


def test_repetition_penalty_shrinks_seen_tokens_both_signs():
    out = apply_repetition_penalty(torch.tensor([2.0, -2.0, 1.0]), torch.tensor([0, 1]), 2.0)
    assert out.tolist() == [1.0, -4.0, 1.0]
    assert sample(LOGITS.clone(), SamplingParams(repetition_penalty=2.0), torch.tensor([1]), None) == 2


class FakeDecoder:  # a real Tokenizer is not needed to test hold-back logic: pieces are given
    def __init__(self, pieces):
        self.pieces = pieces

    def push(self, i):
        return self.pieces[i]

    def flush(self):
        return ""


class PieceTokenizer:
    def __init__(self, pieces):
        self.pieces = pieces

    def stream_decoder(self):
        return FakeDecoder(self.pieces)


def stream_text(pieces, stop):
    stream = TextStream(PieceTokenizer(pieces), stop)
    out = ""
    for i in range(len(pieces)):
        out += stream.push(i)
        if stream.stopped:
            break
    return out + stream.finish(), stream.stopped


def test_stop_string_split_across_tokens_is_caught_and_not_shown():
    assert stream_text(["x = 1", "\n#", "## end", " tail"], ["### end"]) == ("x = 1\n", True)


def test_text_that_only_looked_like_a_stop_string_is_released():
    assert stream_text(["a #", "# b"], ["###"]) == ("a ## b", False)
