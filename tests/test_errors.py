"""Bad input raises a ValueError/TypeError that names the argument and the shapes, on the drop-ins
and on Recurrent, before any kernel runs."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit

I, H = 3, 5


@pytest.fixture(params=["auto", "sequential"])
def lstm(request):
    return rnnkit.LSTM(I, H, num_layers=2, backend=request.param)


@pytest.mark.parametrize(
    ("make_args", "error", "pattern"),
    [
        (lambda: ([1, 2, 3],), TypeError, r"input must be a Tensor or PackedSequence, got list"),
        (lambda: (torch.randn(4, 2, 3, 1),), ValueError, r"input must have shape .*got \(4, 2, 3, 1\)"),
        (lambda: (torch.randn(4, 2, 7),), ValueError, r"input_size. Expected 3, got 7"),
        (lambda: (torch.randn(0, 2, 3),), ValueError, r"empty time or batch"),
        (lambda: (torch.randn(4, 2, 3, dtype=torch.float64),), TypeError,
         r"RNN input dtype \(torch.float64\) does not match weight dtype \(torch.float32\)"),
        (lambda: (torch.randn(4, 2, 3), torch.randn(2, 2, 5)), TypeError, r"hx must be a tuple of 2 Tensors"),
        (lambda: (torch.randn(4, 2, 3), (torch.randn(2, 2, 5), torch.randn(2, 2, 4))), ValueError,
         r"Expected hidden size \(2, 2, 5\) for hx\[1\], got \(2, 2, 4\)"),
        (lambda: (torch.randn(4, 2, 3), (torch.randn(2, 3, 5), torch.randn(2, 3, 5))), ValueError,
         r"Expected hidden size \(2, 2, 5\) for hx\[0\], got \(2, 3, 5\) "
         r"\(batch size 3 does not match the input's 2\)"),
        (lambda: (torch.randn(4, 2, 3), (torch.randn(2, 5), torch.randn(2, 5))), ValueError,
         r"Expected hidden size \(2, 2, 5\) for hx\[0\], got \(2, 5\)"),
        (lambda: (torch.randn(4, 3), (torch.randn(2, 1, 5), torch.randn(2, 1, 5))), ValueError,
         r"Expected hidden size \(2, 5\) for hx\[0\], got \(2, 1, 5\)"),
    ],
)
def test_dropin_input_errors(lstm, make_args, error, pattern):
    with pytest.raises(error, match=pattern):
        lstm(*make_args())


@pytest.mark.parametrize(
    ("lengths", "error", "pattern"),
    [
        ([4, 5], ValueError, r"lengths\[1\] = 5 exceeds the sequence length 4"),
        ([4, 0], ValueError, r"lengths\[1\] = 0: every sequence needs at least one step"),
        ([-1, 2], ValueError, r"lengths\[0\] = -1"),
        ([4, 2, 1], ValueError, r"lengths must have shape \(2,\) \(one per sequence\), got \(3,\)"),
        (torch.tensor([4.0, 2.0]), TypeError, r"lengths must hold integers, got dtype torch.float32"),
        ("42", TypeError, r"lengths must be a 1-D integer tensor or a list of ints, got str"),
    ],
)
def test_lengths_errors(lstm, lengths, error, pattern):
    with pytest.raises(error, match=pattern):
        lstm(torch.randn(4, 2, I), lengths=lengths)


def test_lengths_with_packed_or_unbatched_input_is_refused(lstm):
    packed = pack_padded_sequence(torch.randn(4, 2, I), [4, 2])
    with pytest.raises(ValueError, match="PackedSequence carries its own lengths"):
        lstm(packed, lengths=[4, 2])
    with pytest.raises(ValueError, match="needs batched 3-D input"):
        lstm(torch.randn(4, I), lengths=[4])


def test_gru_state_must_be_one_tensor():
    with pytest.raises(TypeError, match="hx must be a Tensor, got tuple"):
        rnnkit.GRU(I, H)(torch.randn(4, 2, I), (torch.randn(1, 2, H), torch.randn(1, 2, H)))


def test_packed_state_batch_is_checked():
    packed = pack_padded_sequence(torch.randn(4, 2, I), [4, 2])
    with pytest.raises(ValueError, match=r"Expected hidden size \(1, 2, 5\) for hx, got \(1, 3, 5\)"):
        rnnkit.GRU(I, H)(packed, torch.randn(1, 3, H))


def test_recurrent_errors():
    rec = rnnkit.Recurrent(rnnkit.LSTMCell(I, H), num_layers=2)
    with pytest.raises(ValueError, match=r"input must have shape \(batch, time, features\) \(3-D\), got \(4, 3\)"):
        rec(torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"Expected hidden size \(2, 4, 5\) for state\[0\], got \(1, 4, 5\)"):
        rec(torch.randn(4, 6, I), (torch.zeros(1, 4, H), torch.zeros(1, 4, H)))
    with pytest.raises(ValueError, match=r"lengths\[2\] = 7 exceeds the sequence length 6"):
        rec(torch.randn(4, 6, I), lengths=[1, 2, 7, 3])
    with pytest.raises(ValueError, match=r"input_size. Expected 3, got 2"):
        rec.step(torch.randn(4, 2))
    with pytest.raises(ValueError, match="merge must be one of"):
        rnnkit.Recurrent(rnnkit.GRUCell(I, H), merge="max")
    with pytest.raises(ValueError, match="num_layers must be a positive int"):
        rnnkit.Recurrent(rnnkit.GRUCell(I, H), num_layers=0)
    with pytest.raises(TypeError, match="cell must be an rnnkit RecurrentCell, got GRUCell"):
        rnnkit.Recurrent(torch.nn.GRUCell(I, H))
    with pytest.raises(ValueError, match="backend must be one of"):
        rnnkit.LSTM(I, H, backend="cudnn")


def test_cell_errors():
    cell = rnnkit.LSTMCell(I, H)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 3\), got \(2, 4\)"):
        cell(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"state\[1\] must have shape \(2, 5\), got \(2, 4\)"):
        cell(torch.randn(2, I), (torch.zeros(2, H), torch.zeros(2, 4)))
    with pytest.raises(ValueError, match="proj_size must be 0 or in"):
        rnnkit.LSTMCell(I, H, proj_size=H)
    with pytest.raises(ValueError, match="unknown cell 'lsmt'; known cells:"):
        rnnkit.make_cell("lsmt", I, H)
    with pytest.raises(ValueError, match=r"takes no option\(s\) \['proj_size'\]"):
        rnnkit.make_cell("gru", I, H, proj_size=2)


def test_device_mismatch_names_both_devices():
    # "meta" stands in for a second device on a CPU-only machine
    with pytest.raises(ValueError, match=r"input is on meta but the layer's weights are on cpu"):
        rnnkit.GRU(I, H)(torch.empty(4, 2, I, device="meta"))
    with pytest.raises(ValueError, match=r"hx is on meta but the layer's weights are on cpu"):
        rnnkit.GRU(I, H)(torch.randn(4, 2, I), torch.empty(1, 2, H, device="meta"))
