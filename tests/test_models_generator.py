"""One-to-one and one-to-many models: shapes, teacher forcing vs stepping, generation strategies."""

from __future__ import annotations

import pytest
import torch

from rnnkit.cells.registry import cell_names
from rnnkit.models import Generator, OneToOne, RecurrentConfig


@pytest.mark.parametrize("cfg", [RecurrentConfig("lstm", 5), RecurrentConfig("gru", 5, 2, True)])
def test_one_to_one_is_one_recurrent_step(cfg: RecurrentConfig) -> None:
    model = OneToOne(3, 2, cfg)
    x = torch.randn(4, 3)
    out = model(x)
    assert out.shape == (4, 2)
    y, _ = model.rnn(x.unsqueeze(1))
    torch.testing.assert_close(out, model.head(y[:, 0]))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 3\)"):
        model(torch.randn(4, 1, 3))


@pytest.mark.parametrize("cell", cell_names())
@pytest.mark.parametrize("layers", [1, 2])
def test_teacher_forced_logits_equal_stepwise_generation(cell: str, layers: int) -> None:
    model = Generator(8, 4, RecurrentConfig(cell, 6, layers), embedding_dim=3).eval()
    cond = torch.randn(3, 4)
    g = model.generate(cond, max_len=5)
    # feeding the greedy output back with teacher forcing reproduces its argmax at every live step
    logits = model(cond, g.tokens)
    for b in range(3):
        L = int(g.lengths[b])
        assert logits[b, :L].argmax(-1).tolist() == g.tokens[b, :L].tolist()
        logp = torch.log_softmax(logits[b, :L], -1).gather(1, g.tokens[b, :L, None]).sum()
        torch.testing.assert_close(logp, g.scores[b])


def test_generation_strategies() -> None:
    model = Generator(8, 3, RecurrentConfig("gru", 6), num_conditions=5, embedding_dim=4).eval()
    codes = torch.tensor([0, 3, 4])
    g = model.generate(codes, max_len=6)
    assert g.tokens.shape[0] == 3 and g.attention is None
    b1 = model.generate(codes, max_len=6, strategy="beam", beam_width=1)
    assert torch.equal(b1.tokens, g.tokens)
    b4 = model.generate(codes, max_len=6, strategy="beam", beam_width=4)
    assert torch.all(b4.scores >= g.scores - 1e-5)
    s1 = model.generate(codes, max_len=6, strategy="sample", top_k=3, generator=torch.Generator().manual_seed(1))
    s2 = model.generate(codes, max_len=6, strategy="sample", top_k=3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(s1.tokens, s2.tokens)
    with pytest.raises(ValueError, match="strategy must be"):
        model.generate(codes, strategy="nucleus")
    with pytest.raises(ValueError, match=r"cond must hold ids in \[0, 5\)"):
        model.generate(torch.tensor([5]))


def test_generator_errors() -> None:
    with pytest.raises(ValueError, match="bidirectional"):
        Generator(5, 3, RecurrentConfig("gru", 4, bidirectional=True))
    model = Generator(5, 3, RecurrentConfig("gru", 4))
    with pytest.raises(ValueError, match=r"cond must have shape \(batch, 3\)"):
        model(torch.randn(2, 4), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="tgt has batch size 3 but cond has 2"):
        model(torch.randn(2, 3), torch.zeros(3, 3, dtype=torch.long))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_stream_windows_carry_the_state_and_equal_teacher_forcing(cell: str) -> None:
    """``stream`` over two windows, the state carried, equals one call on the whole text; and
    from ``s_0`` with bos in front it is ``forward``'s teacher forcing."""
    torch.manual_seed(0)
    model = Generator(9, 3, RecurrentConfig(cell, 6, 2), num_conditions=2, embedding_dim=4).eval()
    cond, tokens = torch.tensor([0, 1]), torch.randint(3, 9, (2, 11))
    whole, state = model.stream(cond, tokens)
    first, mid = model.stream(cond, tokens[:, :4])
    second, end = model.stream(cond, tokens[:, 4:], mid)
    torch.testing.assert_close(torch.cat([first, second], 1), whole)
    for a, b in zip(end if isinstance(end, tuple) else (end,), state if isinstance(state, tuple) else (state,),
                    strict=True):
        torch.testing.assert_close(a, b)
    bos = torch.full((2, 1), model.bos_id)
    torch.testing.assert_close(model.stream(cond, torch.cat([bos, tokens[:, :-1]], 1))[0], model(cond, tokens))
    with pytest.raises(ValueError, match="tokens has batch size 3 but cond has 2"):
        model.stream(cond, torch.randint(3, 9, (3, 4)))
