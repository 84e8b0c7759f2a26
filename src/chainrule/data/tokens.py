import torch

from chainrule.data.base import Arrays, InMemoryDataModule


class SyntheticTokensDataModule(InMemoryDataModule):
    """Token sequences from a fixed random Markov chain in which each token has `branching` equally
    likely successors: learnable, with a known best loss of ln(branching) nats per token.

    Inputs are (N, seq_len) token ids; targets are the same sequences shifted by one.
    """

    def __init__(self, num_sequences: int, seq_len: int, vocab_size: int, branching: int, **kwargs):
        super().__init__(**kwargs)
        self.num_sequences = num_sequences
        self.seq_len = seq_len
        self.vocab_size = vocab_size
        self.branching = branching
        self.num_classes = vocab_size

    def load(self) -> Arrays:
        generator = torch.Generator().manual_seed(self.split_seed)
        successors = torch.randint(self.vocab_size, (self.vocab_size, self.branching), generator=generator)
        tokens = torch.empty(self.num_sequences, self.seq_len + 1, dtype=torch.int64)
        tokens[:, 0] = torch.randint(self.vocab_size, (self.num_sequences,), generator=generator)
        choices = torch.randint(self.branching, (self.num_sequences, self.seq_len), generator=generator)
        for t in range(self.seq_len):
            tokens[:, t + 1] = successors[tokens[:, t], choices[:, t]]
        return Arrays(tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous())
