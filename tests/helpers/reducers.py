"""Throwaway token reducers for tests of the reducer hook points."""

from __future__ import annotations

from llava.model.token_reduction import TokenReducer


class FirstTokens(TokenReducer):
    """Stage ``tokens``: keeps the first ``keep`` tokens of every item."""

    stage = "tokens"

    def __init__(self, keep: int = 5):
        super().__init__()
        self.keep = keep

    def reduce_tokens(self, tokens, batch):
        return [t[: self.keep] for t in tokens]

    def num_output_tokens(self, num_tokens_in, t, h, w, modality):
        return min(self.keep, num_tokens_in)
