"""Input and output projectors: shapes, lengths, padding invariance, sizes, gradients."""

from __future__ import annotations

import pytest
import torch

from minmo_core.config import InputProjectorConfig, OutputProjectorConfig
from minmo_core.llm.projectors import InputProjector, OutputProjector, semantic_query

CFG = InputProjectorConfig.tiny()
OUT_CFG = OutputProjectorConfig.tiny()
LENGTHS = [9, 4, 1, 8]  # odd, even, a single frame, and the longest is even
T_MAX = 11  # every item is padded, the longest by 3 frames


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _projector() -> InputProjector:
    return InputProjector(CFG).eval()


def _padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(len(LENGTHS), T_MAX, CFG.d_in)  # (B, T, d_in), padding is random, not 0
    return x, torch.tensor(LENGTHS)


@pytest.mark.parametrize("n_frames", [1, 2, 7, 8, 15])
def test_output_shape_and_length_are_ceil_half_for_odd_and_even_frames(n_frames: int) -> None:
    model = _projector()
    lengths = torch.tensor([n_frames, (n_frames + 1) // 2, 0])
    y, out_lengths = model(torch.randn(3, n_frames, CFG.d_in), lengths)
    expected = (n_frames + 1) // 2
    assert y.shape == (3, expected, CFG.d_model)
    assert out_lengths.tolist() == [(n + 1) // 2 for n in lengths.tolist()]
    assert out_lengths.dtype == torch.long


def test_output_lengths_equal_ceil_half_for_every_length() -> None:
    lengths = torch.arange(0, 40)
    assert _projector().output_lengths(lengths).tolist() == [(n + 1) // 2 for n in range(40)]


def test_without_lengths_every_frame_is_valid() -> None:
    model = _projector()
    x = torch.randn(2, 7, CFG.d_in)
    y, out_lengths = model(x)
    torch.testing.assert_close(y, model(x, torch.tensor([7, 7]))[0], rtol=0, atol=0)
    assert out_lengths.tolist() == [4, 4]


def test_padded_batch_matches_each_item_run_alone() -> None:
    model = _projector()
    x, lengths = _padded_batch()
    y, out_lengths = model(x, lengths)
    for i, n in enumerate(LENGTHS):
        alone, alone_len = model(x[i : i + 1, :n], torch.tensor([n]))  # (1, ceil(n/2), C)
        assert out_lengths[i] == alone_len[0] == alone.shape[1]
        torch.testing.assert_close(y[i, : out_lengths[i]], alone[0])


def test_changing_padded_frames_does_not_change_any_output() -> None:
    model = _projector()
    x, lengths = _padded_batch()
    padded = ~(torch.arange(T_MAX) < lengths[:, None])  # (B, T)
    x_other = x.clone()
    x_other[padded] = 100.0 * torch.randn(int(padded.sum()), CFG.d_in)
    y, _ = model(x, lengths)
    y_other, _ = model(x_other, lengths)
    torch.testing.assert_close(y_other, y, rtol=0, atol=0)


def test_padded_outputs_are_zero_and_valid_ones_are_not() -> None:
    y, out_lengths = _projector()(*_padded_batch())
    for i, n in enumerate(out_lengths.tolist()):
        assert torch.count_nonzero(y[i, n:]) == 0
        assert torch.all(y[i, :n].abs().sum(dim=-1) > 0)


def test_an_empty_item_gives_zeros_not_nans() -> None:
    y, out_lengths = _projector()(torch.randn(2, 6, CFG.d_in), torch.tensor([6, 0]))
    assert out_lengths.tolist() == [3, 0]
    assert torch.isfinite(y).all()
    assert torch.count_nonzero(y[1]) == 0


def test_padding_mask_gives_the_same_result_as_lengths() -> None:
    model = _projector()
    x, lengths = _padded_batch()
    padding_mask = ~(torch.arange(T_MAX) < lengths[:, None])  # (B, T), True at padding
    y_len, len_a = model(x, lengths)
    y_mask, len_b = model(x, padding_mask=padding_mask)
    torch.testing.assert_close(y_mask, y_len, rtol=0, atol=0)
    assert torch.equal(len_a, len_b)


def test_a_padding_mask_with_holes_is_rejected() -> None:
    padding_mask = torch.zeros(1, 5, dtype=torch.bool)
    padding_mask[0, 1] = True
    with pytest.raises(ValueError, match="right-padded"):
        _projector()(torch.randn(1, 5, CFG.d_in), padding_mask=padding_mask)


def test_real_size_parameter_counts() -> None:
    with torch.device("meta"):
        n_in = InputProjector(InputProjectorConfig()).num_parameters()
        n_out = OutputProjector(OutputProjectorConfig()).num_parameters()
    assert 160_000_000 <= n_in <= 175_000_000  # paper: 170M
    assert n_out == 7168 * 896 + 896  # paper: 6M


def test_output_projector_maps_last_dim_and_is_affine() -> None:
    model = OutputProjector(OUT_CFG)
    x = torch.randn(2, 3, OUT_CFG.d_in)
    y = torch.randn(2, 3, OUT_CFG.d_in)
    a, b = 2.5, -0.75
    bias = model.proj.bias
    assert model(x).shape == (2, 3, OUT_CFG.d_out)
    torch.testing.assert_close(
        model(a * x + b * y) - bias, a * (model(x) - bias) + b * (model(y) - bias)
    )
    torch.testing.assert_close(model(torch.zeros(OUT_CFG.d_in)), bias)


def test_semantic_query_puts_user_embedding_first() -> None:
    d = OUT_CFG.d_in // 2
    user, hidden = torch.randn(3, d), torch.randn(3, d)
    q = semantic_query(user, hidden)
    assert q.shape == (3, 2 * d)
    assert torch.equal(q[:, :d], user)
    assert torch.equal(q[:, d:], hidden)
    assert OutputProjector(OUT_CFG)(q).shape == (3, OUT_CFG.d_out)
    with pytest.raises(ValueError, match="shapes differ"):
        semantic_query(user, torch.randn(3, d + 1))


def test_input_projector_gradients_reach_every_parameter() -> None:
    model = InputProjector(CFG)
    out, _ = model(*_padded_batch())
    _assert_every_parameter_gets_a_gradient(model, out)


def test_output_projector_gradients_reach_every_parameter() -> None:
    model = OutputProjector(OUT_CFG)
    _assert_every_parameter_gets_a_gradient(model, model(torch.randn(4, OUT_CFG.d_in)))


def _assert_every_parameter_gets_a_gradient(model: torch.nn.Module, out: torch.Tensor) -> None:
    # a random readout: a plain sum of LayerNorm outputs has no gradient upstream
    (out * torch.randn_like(out)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.count_nonzero(p.grad) > 0, name
