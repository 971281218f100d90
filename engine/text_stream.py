"""Token ids in, user-visible text out: incremental UTF-8 decoding and stop strings."""

from engine.tokenizer import Tokenizer


class TextStream:
    """Holds back text that could still turn into a stop string, and cuts the text at one."""

    def __init__(self, tokenizer: Tokenizer, stop: list[str]) -> None:
        self.decoder = tokenizer.stream_decoder()
        self.stop = [s for s in stop if s]
        self.pending = ""  # decoded, not yet emitted
        self.stopped = False

    def push(self, token_id: int) -> str:
        self.pending += self.decoder.push(token_id)
        return self._emit()

    def finish(self) -> str:
        """The rest of the text, once no more tokens come."""
        if self.stopped:
            return ""
        self.pending += self.decoder.flush()
        out = self._emit()
        if not self.stopped:
            out, self.pending = out + self.pending, ""  # nothing can complete a stop string now
        return out

    def _emit(self) -> str:
        for s in self.stop:
            at = self.pending.find(s)
            if at >= 0:
                self.stopped = True
                out, self.pending = self.pending[:at], ""
                return out
        hold = max((_overlap(self.pending, s) for s in self.stop), default=0)
        cut = len(self.pending) - hold
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out


def _overlap(text: str, stop: str) -> int:
    """Length of the longest end of `text` that begins `stop`."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0
