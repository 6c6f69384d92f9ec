"""Linear-chain CRF against brute force: enumerate every tag path of tiny problems."""

from __future__ import annotations

import itertools

import pytest
import torch

from rnnkit.models.crf import LinearChainCRF, crf_log_partition, crf_score


def brute_force(crf: LinearChainCRF, emissions: torch.Tensor, length: int) -> tuple[torch.Tensor, list[int], float]:
    """(log Z, best path, best score) of one sequence by enumerating all K^L paths."""
    K = crf.num_tags
    scores, paths = [], []
    for path in itertools.product(range(K), repeat=length):
        s = crf.start[path[0]] + crf.end[path[-1]]
        s = s + sum(emissions[t, y] for t, y in enumerate(path))
        s = s + sum(crf.transitions[a, b] for a, b in itertools.pairwise(path))
        scores.append(s)
        paths.append(list(path))
    scores_t = torch.stack(scores)
    best = int(scores_t.argmax())
    return torch.logsumexp(scores_t, 0), paths[best], float(scores_t[best])


@pytest.mark.parametrize("num_tags,lengths", [(3, [4, 2, 1, 3]), (4, [3, 3]), (2, [5, 1, 4])])
@torch.no_grad()
def test_log_partition_viterbi_and_likelihood_equal_brute_force(num_tags: int, lengths: list[int]) -> None:
    torch.manual_seed(num_tags)
    crf = LinearChainCRF(num_tags).double()
    with torch.no_grad():  # larger than the default init so that paths differ clearly
        for p in crf.parameters():
            p.normal_(0, 1.0)
    B, T = len(lengths), max(lengths)
    emissions = torch.randn(B, T, num_tags, dtype=torch.float64)
    mask = torch.arange(T).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    log_z = crf.log_partition(emissions, mask)
    tags, best_scores = crf.decode(emissions, mask)
    gold = torch.randint(num_tags, (B, T))
    ll = crf(emissions, gold, mask)
    for b, L in enumerate(lengths):
        want_z, want_path, want_score = brute_force(crf, emissions[b], L)
        torch.testing.assert_close(log_z[b], want_z)
        assert tags[b, :L].tolist() == want_path
        assert torch.all(tags[b, L:] == -1)
        assert float(best_scores[b]) == pytest.approx(want_score)
        g = gold[b, :L].tolist()
        s = crf.start[g[0]] + crf.end[g[-1]] + sum(emissions[b, t, y] for t, y in enumerate(g))
        s = s + sum(crf.transitions[x, y] for x, y in itertools.pairwise(g))
        torch.testing.assert_close(ll[b], s - want_z)


def test_padded_emissions_and_tags_change_nothing() -> None:
    crf = LinearChainCRF(3)
    emissions = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    tags = torch.randint(3, (2, 5))
    other_e, other_t = emissions.clone(), tags.clone()
    other_e[0, 3:] = 50.0
    other_t[0, 3:] = -7  # any value at padding, even out of range
    torch.testing.assert_close(crf(emissions, tags, mask), crf(other_e, other_t, mask))
    torch.testing.assert_close(crf.decode(emissions, mask)[0], crf.decode(other_e, mask)[0])


def test_likelihoods_of_all_paths_sum_to_one() -> None:
    crf = LinearChainCRF(3)
    emissions = torch.randn(1, 3, 3)
    paths = torch.tensor(list(itertools.product(range(3), repeat=3)))  # (27, 3)
    ll = crf(emissions.expand(27, 3, 3), paths)
    torch.testing.assert_close(ll.exp().sum(), torch.tensor(1.0))


def test_gradients_reach_transitions() -> None:
    crf = LinearChainCRF(4)
    (-crf(torch.randn(2, 3, 4), torch.randint(4, (2, 3))).mean()).backward()
    assert crf.transitions.grad is not None and crf.transitions.grad.abs().sum() > 0


def test_crf_errors() -> None:
    crf = LinearChainCRF(3)
    with pytest.raises(ValueError, match=r"emissions must have shape \(batch, time, 3\)"):
        crf.log_partition(torch.zeros(2, 4, 2))
    with pytest.raises(ValueError, match="prefix mask"):
        crf.log_partition(torch.zeros(1, 3, 3), torch.tensor([[True, False, True]]))
    with pytest.raises(ValueError, match=r"mask\[:, 0\] must be True"):
        crf.log_partition(torch.zeros(1, 3, 3), torch.tensor([[False, False, False]]))
    with pytest.raises(ValueError, match=r"tags at unpadded steps must be in \[0, 3\)"):
        crf(torch.zeros(1, 2, 3), torch.tensor([[0, 3]]))


def test_gradcheck_log_likelihood_float64() -> None:
    def ll(emissions, start, transitions, end):
        return crf_score(emissions, tags, mask, start, transitions, end) - crf_log_partition(
            emissions, mask, start, transitions, end)

    tags = torch.randint(3, (2, 4))
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    inputs = [torch.randn(*shape, dtype=torch.float64, requires_grad=True) for shape in [(2, 4, 3), (3,), (3, 3), (3,)]]
    assert torch.autograd.gradcheck(ll, inputs)
