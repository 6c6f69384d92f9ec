"""Seq2Seq: shapes, source masking, teacher forcing, the whole-sequence path, greedy vs beam."""

from __future__ import annotations

import pytest
import torch

from rnnkit.cells.registry import cell_names
from rnnkit.models import LexicalSeq2Seq, PointerGenerator, RecurrentConfig, Seq2Seq

SRC_LEN = [6, 2, 4]


def make(attention: str = "bahdanau", enc: RecurrentConfig | None = None, dec: RecurrentConfig | None = None,
         **kw) -> Seq2Seq:
    enc = enc or RecurrentConfig("gru", 6, 1, True)
    dec = dec or RecurrentConfig("lstm", 12 if attention == "dot" else 7)
    return Seq2Seq(11, 9, enc, dec, attention=attention, embedding_dim=5, **kw).eval()


def batch():
    B, S = len(SRC_LEN), max(SRC_LEN)
    mask = torch.arange(S).unsqueeze(0) < torch.tensor(SRC_LEN).unsqueeze(1)
    src = torch.randint(3, 11, (B, S))
    garbage = torch.where(mask, src, torch.randint(3, 11, (B, S)))
    return src, garbage, mask, torch.randint(3, 9, (B, 4))


@pytest.mark.parametrize("attention", ["bahdanau", "dot", "general"])
def test_shapes_and_padded_source_never_matters(attention: str) -> None:
    model = make(attention)
    src, garbage, mask, tgt = batch()
    logits = model(src, tgt, SRC_LEN)
    assert logits.shape == (3, 4, 9)
    torch.testing.assert_close(model(garbage, tgt, SRC_LEN), logits)
    for decode in (lambda s: model.greedy(s, SRC_LEN, max_len=5),
                   lambda s: model.beam_search(s, SRC_LEN, beam_width=3, max_len=5)):
        out, out2 = decode(src), decode(garbage)
        assert torch.equal(out.tokens, out2.tokens)
        T = out.tokens.size(1)
        assert out.attention.shape == (3, T, 6)
        assert torch.all(out.attention[~mask.unsqueeze(1).expand(3, T, 6)] == 0)  # no weight on padding
        live = torch.arange(T).unsqueeze(0) < out.lengths.unsqueeze(1)
        torch.testing.assert_close(out.attention.sum(-1)[live], torch.ones(int(live.sum())))


@pytest.mark.parametrize("attention", ["bahdanau", "dot", "general"])
@pytest.mark.parametrize("enc_cell,dec_cell", [("lstm", "gru"), ("rnn", "lstm"), ("gru", "rnn_relu")])
def test_beam_width_one_equals_greedy(attention: str, enc_cell: str, dec_cell: str) -> None:
    model = make(attention, RecurrentConfig(enc_cell, 6, 2, True), RecurrentConfig(dec_cell, 12, 2),
                 input_feeding=attention != "bahdanau")
    src = batch()[0]
    g = model.greedy(src, SRC_LEN, max_len=7)
    b = model.beam_search(src, SRC_LEN, beam_width=1, max_len=7, length_penalty=0.6)
    assert torch.equal(g.tokens, b.tokens) and torch.equal(g.lengths, b.lengths)
    torch.testing.assert_close(g.scores, b.scores)
    torch.testing.assert_close(g.attention, b.attention)


def test_wider_beam_never_scores_below_greedy() -> None:
    model = make("general")
    src = batch()[0]
    g = model.greedy(src, SRC_LEN, max_len=6)
    b = model.beam_search(src, SRC_LEN, beam_width=6, max_len=6)
    assert torch.all(b.scores >= g.scores - 1e-5)


@pytest.mark.parametrize("attention", ["dot", "general"])
def test_whole_sequence_path_equals_stepping(attention: str) -> None:
    model = make(attention)
    src, _, _, tgt = batch()
    fast = model(src, tgt, SRC_LEN)  # Luong, no input feeding, full teacher forcing: one Recurrent call
    memory, mask, state = model.encode(src, SRC_LEN)
    step = model._step_fn(memory, mask)
    prev = torch.cat([torch.full((3, 1), model.bos_id), tgt[:, :-1]], 1)
    slow = []
    for t in range(4):
        lg, state, _ = step(prev[:, t], state)
        slow.append(lg)
    torch.testing.assert_close(fast, torch.stack(slow, 1), atol=1e-5, rtol=1e-4)


def test_teacher_forcing_zero_feeds_back_the_argmax() -> None:
    model = make("bahdanau")
    src, _, _, tgt = batch()
    free = model(src, tgt, SRC_LEN, teacher_forcing=0.0)
    g = model.greedy(src, SRC_LEN, max_len=4)
    # where greedy has not ended, free-running logits pick exactly the greedy tokens
    for b in range(3):
        L = int(g.lengths[b])
        assert free[b, :L].argmax(-1).tolist() == g.tokens[b, :L].tolist()
    forced = model(src, tgt, SRC_LEN, teacher_forcing=1.0)
    assert not torch.allclose(free, forced)


@pytest.mark.parametrize("cell", cell_names())
def test_any_registered_cell_trains_one_step(cell: str) -> None:
    model = make("bahdanau", RecurrentConfig(cell, 6, 2, True, "sum"), RecurrentConfig(cell, 6, 2)).train()
    src, _, _, tgt = batch()
    loss = torch.nn.functional.cross_entropy(model(src, tgt, SRC_LEN, teacher_forcing=0.5).flatten(0, 1),
                                             tgt.flatten())
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("attention", ["bahdanau", "general"])
def test_dropout_acts_in_training_only(attention: str) -> None:
    torch.manual_seed(0)
    plain = make(attention)
    dropped = make(attention, dropout=0.5)
    dropped.load_state_dict(plain.state_dict())  # dropout adds no weights
    src, _, _, tgt = batch()
    torch.testing.assert_close(dropped(src, tgt, SRC_LEN), plain(src, tgt, SRC_LEN))  # eval: identity
    assert torch.equal(dropped.greedy(src, SRC_LEN, max_len=5).tokens, plain.greedy(src, SRC_LEN, max_len=5).tokens)
    dropped.train()
    plain.train()
    a, b = dropped(src, tgt, SRC_LEN), dropped(src, tgt, SRC_LEN)
    assert not torch.allclose(a, b)  # fresh masks on each call
    torch.testing.assert_close(plain(src, tgt, SRC_LEN), plain(src, tgt, SRC_LEN))
    for forced in (1.0, 0.5):  # the whole-sequence path and the stepping path both drop
        torch.manual_seed(1)
        c = dropped(src, tgt, SRC_LEN, teacher_forcing=forced)
        torch.manual_seed(1)
        torch.testing.assert_close(dropped(src, tgt, SRC_LEN, teacher_forcing=forced), c)  # seeded masks
        assert not torch.allclose(c, plain(src, tgt, SRC_LEN, teacher_forcing=forced))


def test_seq2seq_errors() -> None:
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.0"):
        Seq2Seq(5, 5, dropout=1.0)
    with pytest.raises(ValueError, match="bidirectional"):
        Seq2Seq(5, 5, decoder=RecurrentConfig("gru", 4, bidirectional=True))
    with pytest.raises(ValueError, match="attention must be one of"):
        Seq2Seq(5, 5, attention="cosine")
    with pytest.raises(ValueError, match="same width"):
        Seq2Seq(5, 5, RecurrentConfig("gru", 4, bidirectional=True), RecurrentConfig("gru", 4), attention="dot")
    with pytest.raises(ValueError, match="eos_id=7 is not a target token id"):
        Seq2Seq(5, 5, eos_id=7)
    model = make()
    src, _, _, tgt = batch()
    with pytest.raises(ValueError, match=r"src must hold ids in \[0, 11\)"):
        model(src + 20, tgt)
    with pytest.raises(ValueError, match="teacher_forcing must be in"):
        model(src, tgt, teacher_forcing=1.5)
    with pytest.raises(ValueError, match="beam_width must be a positive int"):
        model.beam_search(src, beam_width=0)


def test_float64_model_decodes_in_float64() -> None:
    model = make("bahdanau").double()
    src = batch()[0]
    g = model.greedy(src, SRC_LEN, max_len=5)
    b = model.beam_search(src, SRC_LEN, beam_width=1, max_len=5)
    assert g.scores.dtype == torch.float64 and g.attention.dtype == torch.float64
    torch.testing.assert_close(g.scores, b.scores)
    assert "attention='bahdanau'" in repr(model)


# -- LexicalSeq2Seq (Arthur et al. 2016) ---------------------------------------------------------
def make_lexical(probs_scale: float = 1.0, attention: str = "general") -> LexicalSeq2Seq:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 9, (11, 3), generator=g)
    probs = torch.rand(11, 3, generator=g) * probs_scale
    probs[:3] = 0  # pad, bos, eos translate to nothing
    torch.manual_seed(0)
    return LexicalSeq2Seq(11, 9, RecurrentConfig("gru", 6, 1, True), RecurrentConfig("lstm", 7), attention=attention,
                          embedding_dim=5, lexicon_ids=ids, lexicon_probs=probs).eval()


@pytest.mark.parametrize("attention", ["bahdanau", "general"])
def test_lexicon_bias_is_log_of_attention_weighted_translations(attention: str) -> None:
    lexical = make_lexical(attention=attention)
    torch.manual_seed(0)
    plain = Seq2Seq(11, 9, RecurrentConfig("gru", 6, 1, True), RecurrentConfig("lstm", 7), attention=attention,
                    embedding_dim=5).eval()
    plain.load_state_dict(lexical.state_dict())  # the lexicon is not a weight: same parameters
    src, _, _, tgt = batch()
    memory, mask, state = plain.encode(src, SRC_LEN)
    step = plain._step_fn(memory, mask)
    prev = torch.cat([torch.full((3, 1), plain.bos_id), tgt[:, :-1]], 1)
    want = []
    for t in range(4):  # the bias by brute force: sum over source positions of attention * lex(v | x_j)
        lg, state, a = step(prev[:, t], state)
        p_lex = torch.zeros(3, 9)
        for b in range(3):
            for j in range(max(SRC_LEN)):
                for k in range(3):
                    p_lex[b, lexical.lexicon_ids[src[b, j], k]] += a[b, j] * lexical.lexicon_probs[src[b, j], k]
        want.append(lg + torch.log(p_lex + lexical.eps))
    torch.testing.assert_close(lexical(src, tgt, SRC_LEN), torch.stack(want, 1), atol=1e-5, rtol=1e-4)


def test_lexical_whole_sequence_path_equals_stepping_and_beam_keeps_the_lexicon() -> None:
    model = make_lexical()
    src, garbage, _, tgt = batch()
    fast = model(src, tgt, SRC_LEN)
    slow = model(src, tgt, SRC_LEN, teacher_forcing=0.999999, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)
    assert torch.equal(model.beam_search(src, SRC_LEN, beam_width=1, max_len=5).tokens,
                       model.greedy(src, SRC_LEN, max_len=5).tokens)
    assert torch.equal(model.beam_search(garbage, SRC_LEN, beam_width=3, max_len=5).tokens,
                       model.beam_search(src, SRC_LEN, beam_width=3, max_len=5).tokens)


def test_an_untrained_lexical_model_already_translates_word_for_word() -> None:
    ids, probs = torch.zeros(11, 1, dtype=torch.long), torch.zeros(11, 1)
    ids[4], probs[4] = 5, 1.0  # source word 4 means target word 5
    model = LexicalSeq2Seq(11, 9, RecurrentConfig("gru", 6, 1, True), RecurrentConfig("lstm", 7),
                           attention="general", embedding_dim=5, lexicon_ids=ids, lexicon_probs=probs).eval()
    assert model.greedy(torch.tensor([[4]]), max_len=1).tokens.tolist() == [[5]]


def test_lexical_bias_gradcheck_float64() -> None:
    model = make_lexical().double()
    ids, probs = model.lexicon_ids[:2].unsqueeze(0).expand(2, 2, 3), model.lexicon_probs[:2].double()
    probs = (probs + 0.1).unsqueeze(0).expand(2, 2, 3)
    a = torch.softmax(torch.randn(2, 3, 2, dtype=torch.float64), -1).requires_grad_()
    assert torch.autograd.gradcheck(lambda att: model._lexical_bias(att, ids, probs), (a,))


def test_lexicon_errors() -> None:
    enc, dec = RecurrentConfig("gru", 6, 1, True), RecurrentConfig("lstm", 7)
    with pytest.raises(ValueError, match="must both be"):
        LexicalSeq2Seq(11, 9, enc, dec, lexicon_ids=torch.zeros(11, 2, dtype=torch.long), lexicon_probs=torch.zeros(11))
    with pytest.raises(ValueError, match="11 rows"):
        LexicalSeq2Seq(12, 9, enc, dec, lexicon_ids=torch.zeros(11, 2, dtype=torch.long),
                       lexicon_probs=torch.zeros(11, 2))
    with pytest.raises(ValueError, match=r"target token ids in \[0, 9\)"):
        LexicalSeq2Seq(11, 9, enc, dec, lexicon_ids=torch.full((11, 2), 9), lexicon_probs=torch.zeros(11, 2))


# -- the pointer-generator (See et al. 2017) ---------------------------------------------------------
V, X = 11, 3  # a shared vocabulary of 11 ids, 3 extended ids (11, 12, 13) for unknown source words


def make_pointer(attention: str = "general", **kw) -> PointerGenerator:
    torch.manual_seed(0)
    return PointerGenerator(V, RecurrentConfig("gru", 6, 1, True), RecurrentConfig("lstm", 7), attention=attention,
                            embedding_dim=5, extra=X, **kw).eval()


def pointer_batch():
    src = torch.tensor([[4, 11, 5, 12, 6, 2], [7, 11, 0, 0, 0, 0], [13, 4, 4, 2, 0, 0]])  # 11-13: unknown words
    return src, [6, 2, 4], torch.tensor([[11, 5, 12, 2], [11, 7, 2, 0], [13, 4, 2, 0]])


@pytest.mark.parametrize("attention", ["bahdanau", "general"])
def test_pointer_mixes_generation_and_copying_as_the_paper_says(attention: str) -> None:
    model = make_pointer(attention)
    src, lengths, tgt = pointer_batch()
    logp = model(src, tgt, lengths)
    assert logp.shape == (3, 4, V + X)
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(3, 4))  # a distribution over V + X ids
    # brute force, step by step: p_gen * softmax + (1 - p_gen) * attention summed per source id
    memory, mask, state = Seq2Seq.encode(model, model._in_vocab(src), lengths)
    prepared = model.attention.prepare(memory)
    prev = model._in_vocab(torch.cat([torch.full((3, 1), model.bos_id), tgt[:, :-1]], 1))
    for t in range(4):
        lg, state, a = model._step(prev[:, t], state, memory, mask, prepared)
        ctx = torch.einsum("bs,bsm->bm", a, memory)
        emb = model.tgt_embed(prev[:, t])
        p_gen = torch.sigmoid(model.switch(torch.cat([ctx, state[0], emb], 1)))
        want = torch.zeros(3, V + X)
        want[:, :V] = p_gen * lg.softmax(-1)
        for b in range(3):
            for j in range(lengths[b]):
                want[b, src[b, j]] += (1 - p_gen[b, 0]) * a[b, j]
        torch.testing.assert_close(logp[:, t].exp(), want, atol=1e-6, rtol=1e-5)
    assert (logp[1, :, 12:].exp() < 1e-9).all()  # example 1 has no word 12 or 13 to copy


def test_pointer_whole_sequence_path_equals_stepping_and_beam_one_is_greedy() -> None:
    model = make_pointer("general")
    src, lengths, tgt = pointer_batch()
    fast = model(src, tgt, lengths)
    slow = model(src, tgt, lengths, teacher_forcing=0.999999, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)
    greedy = model.greedy(src, lengths, max_len=6)
    assert torch.equal(model.beam_search(src, lengths, beam_width=1, max_len=6).tokens, greedy.tokens)


def test_a_pointer_that_only_copies_outputs_the_attended_unknown_word() -> None:
    model = make_pointer("general")
    with torch.no_grad():
        model.switch.weight.zero_()
        model.switch.bias.fill_(-30.0)  # p_gen = 0: copy only
    src = torch.tensor([[12, 12, 12]])
    assert model.greedy(src, max_len=3).tokens.tolist() == [[12, 12, 12]]  # the unknown word, under its own id


def test_a_pointer_learns_to_copy_words_it_has_no_embedding_for() -> None:
    """Copy tasks whose words are all unknown (extended ids, numbered per example): a pointer
    network's signature. Trained on 300 random strings, tested on 50 new ones."""
    g = torch.Generator().manual_seed(0)

    def strings(n):
        lengths = torch.randint(3, 6, (n,), generator=g)
        src = torch.zeros(n, 6, dtype=torch.long)
        tgt = torch.zeros(n, 7, dtype=torch.long)
        for i, n_i in enumerate(lengths.tolist()):
            words = 11 + torch.randperm(X, generator=g)[: min(n_i, X)]
            seq = words[torch.randint(0, len(words), (n_i,), generator=g)]
            src[i, :n_i], tgt[i, :n_i], tgt[i, n_i] = seq, seq, 2
        return src, lengths, tgt

    torch.manual_seed(0)
    model = PointerGenerator(V, RecurrentConfig("gru", 16, 1, True), RecurrentConfig("gru", 32), attention="general",
                             embedding_dim=8, extra=X)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    src, lengths, tgt = strings(300)
    for _ in range(6):
        for i in range(0, 300, 30):
            logp = model(src[i : i + 30], tgt[i : i + 30], lengths[i : i + 30])
            loss = torch.nn.functional.nll_loss(logp.reshape(-1, V + X), tgt[i : i + 30].reshape(-1), ignore_index=0)
            opt.zero_grad()
            loss.backward()
            opt.step()
    src, lengths, tgt = strings(50)
    out = model.eval().greedy(src, lengths, max_len=7).tokens
    right = sum(out[i, : n + 1].tolist() == tgt[i, : n + 1].tolist() for i, n in enumerate(lengths.tolist()))
    assert right >= 40, right  # measured 50 of 50; a model without copying cannot name an unknown word at all


def test_pointer_gradcheck_float64() -> None:
    model = make_pointer("general").double()
    src, lengths, tgt = pointer_batch()
    logits = torch.randn(3, 2, V, dtype=torch.float64, requires_grad=True)
    a = torch.softmax(torch.randn(3, 2, 6, dtype=torch.float64), -1).requires_grad_()
    ctx = torch.randn(3, 2, model.memory_size, dtype=torch.float64, requires_grad=True)
    q = torch.randn(3, 2, model.out_size, dtype=torch.float64)
    emb = torch.randn(3, 2, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda lg, att, c: model._mix(lg, att, c, q, emb, src), (logits, a, ctx))


def test_pointer_errors() -> None:
    enc, dec = RecurrentConfig("gru", 6, 1, True), RecurrentConfig("lstm", 7)
    with pytest.raises(ValueError, match="extra must be an int >= 0"):
        PointerGenerator(V, enc, dec, extra=-1)
    with pytest.raises(ValueError, match="unk_id=11 is not a token id"):
        PointerGenerator(V, enc, dec, unk_id=11)
    model = make_pointer()
    with pytest.raises(ValueError, match="src"):
        model.greedy(torch.tensor([[14]]))  # beyond the extended ids
    with pytest.raises(ValueError, match="tgt"):
        model(torch.tensor([[4]]), torch.tensor([[14]]))
