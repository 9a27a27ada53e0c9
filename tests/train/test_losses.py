"""Losses against values computed by hand (plain Python math on small tensors)."""
import math

import pytest
import torch
import torch.nn.functional as F

from helpers.train.losses import (EmbedderLoss, gather_keep_grad, infonce, kl_div_loss, m3_kd_loss,
                            own_group, teacher_targets)


def lse(xs):
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def softmax(xs):
    z = lse(xs)
    return [math.exp(x - z) for x in xs]


def emb(rows):
    return torch.tensor(rows, dtype=torch.float32)


# 2 queries, groups of 2 passages (pos first), 2-d embeddings
Q = [[1.0, 0.0], [0.0, 1.0]]
P = [[0.8, 0.6], [0.6, 0.8], [0.0, 1.0], [1.0, 0.0]]
T = 0.5


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def hand_scores():
    return [[dot(q, p) / T for p in P] for q in Q]


def test_infonce_in_batch_targets_by_hand():
    S = hand_scores()
    # query 0 target column 0, query 1 target column 2 (i * G)
    want = ((lse(S[0]) - S[0][0]) + (lse(S[1]) - S[1][2])) / 2
    got = EmbedderLoss(temperature=T)(emb(Q), emb(P))
    assert got.item() == pytest.approx(want, rel=1e-6)
    # the wrong target (column i instead of i*G) gives a different value: the test can fail
    wrong = ((lse(S[0]) - S[0][0]) + (lse(S[1]) - S[1][1])) / 2
    assert abs(wrong - want) > 1e-3


def test_own_group_picks_each_querys_group():
    S = torch.arange(12.).view(2, 6)             # B=2, G=3
    assert own_group(S, 3).tolist() == [[0, 1, 2], [9, 10, 11]]


@pytest.mark.parametrize("tt", [1.0, 2.0])
def test_kl_div_with_teacher_temperature_by_hand(tt):
    S = hand_scores()
    teacher = [3.0, -1.0, 0.5, 2.0]
    loss = EmbedderLoss(temperature=T, kd_loss_type="kl_div", teacher_temperature=tt)
    got = loss(emb(Q), emb(P), teacher).item()
    kd = 0.0
    for i in range(2):
        tgt = softmax([s / tt for s in teacher[2 * i:2 * i + 2]])
        grp = S[i][2 * i:2 * i + 2]
        kd += -sum(t * (g - lse(grp)) for t, g in zip(tgt, grp))
    kd /= 2
    nce = ((lse(S[0]) - S[0][0]) + (lse(S[1]) - S[1][2])) / 2
    assert got == pytest.approx(kd + nce, rel=1e-6)


def test_teacher_temperature_changes_targets():
    a = teacher_targets([2.0, 0.0], 1, 2, 1.0)
    b = teacher_targets([2.0, 0.0], 1, 2, 2.0)
    assert a[0, 0].item() == pytest.approx(math.exp(2) / (math.exp(2) + 1))
    assert b[0, 0].item() == pytest.approx(math.exp(1) / (math.exp(1) + 1))


def test_m3_kd_loss_by_hand():
    S = hand_scores()
    teacher = [1.0, 0.0, -0.5, 0.5]
    got = EmbedderLoss(temperature=T, kd_loss_type="m3_kd_loss")(emb(Q), emb(P), teacher).item()
    G, total = 2, 0.0
    for j in range(G):
        per_q = []
        for i in range(2):
            # row i drops its own group's earlier positions i*G+0 .. i*G+j-1 (FlagEmbedding)
            masked = [s for c, s in enumerate(S[i]) if c not in {i * G + jj for jj in range(j)}]
            per_q.append(softmax(teacher[G * i:G * i + G])[j] * (lse(masked) - S[i][i * G + j]))
        total += sum(per_q) / 2
    assert got == pytest.approx(total, rel=1e-5)


def test_simulated_two_device_gather_equals_single_device_batch_and_keeps_local_grad():
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(4, 3), dim=-1)
    p = torch.nn.functional.normalize(torch.randn(8, 3), dim=-1)     # G = 2
    teacher = torch.randn(4, 2)
    full = EmbedderLoss(temperature=0.1)(q, p, teacher)

    qs, ps, ts = q.split(2), p.split(4), teacher.split(2)
    losses = []
    for rank in range(2):
        ql = qs[rank].clone().requires_grad_(True)
        pl = ps[rank].clone().requires_grad_(True)
        calls = iter([qs, ps])
        def gather(parts, t, calls=calls):
            src = next(calls)
            for r, x in enumerate(src):
                parts[r].copy_(x)
        l = EmbedderLoss(temperature=0.1, negatives_cross_device=True, world_size=2, rank=rank,
                         all_gather=gather)(ql, pl, ts[rank])
        l.backward()
        assert ql.grad is not None and ql.grad.abs().sum() > 0       # local slice keeps its grad
        losses.append(l.item())
    # InfoNCE part is over the global batch on both ranks; KD part is per-rank local
    S = q @ p.T / 0.1
    nce = infonce(S, 2).item()
    tg = teacher_targets(teacher, 4, 2)
    kd = [kl_div_loss(own_group(S, 2)[2 * r:2 * r + 2], tg[2 * r:2 * r + 2]).item() for r in range(2)]
    for r in range(2):
        assert losses[r] == pytest.approx(nce + kd[r], rel=1e-5)
    assert sum(losses) / 2 == pytest.approx(full.item(), rel=1e-5)


def test_gather_keep_grad_orders_by_rank():
    a = torch.ones(1, 2, requires_grad=True)

    def gather(parts, t):
        parts[0].fill_(7.0)
        parts[1].copy_(t)
    out = gather_keep_grad(a, 2, 1, gather)
    assert out.tolist() == [[7.0, 7.0], [1.0, 1.0]]
    out.sum().backward()
    assert a.grad.tolist() == [[1.0, 1.0]]


def test_no_kd_is_infonce_only():
    S = torch.tensor(hand_scores())
    assert EmbedderLoss(temperature=T)(emb(Q), emb(P), None).item() == pytest.approx(
        infonce(S, 2).item())


def test_bad_inputs_have_clear_messages():
    loss = EmbedderLoss(temperature=T)
    with pytest.raises(ValueError, match="whole number of groups"):
        loss(emb(Q), emb(P[:3]))
    with pytest.raises(ValueError, match="3 teacher scores for 2 queries x 2"):
        loss(emb(Q), emb(P), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="teacher scores contains NaN"):
        loss(emb(Q), emb(P), [1.0, float("nan"), 0.0, 0.0])
    # a NaN embedding (an fp16 overflow) is no input error: the loss is NaN and the loop skips the step
    assert torch.isnan(loss(torch.tensor([[float("nan"), 0.0], [0.0, 1.0]]), emb(P)))
    with pytest.raises(ValueError, match="kd_loss_type"):
        EmbedderLoss(kd_loss_type="mse")
    with pytest.raises(ValueError, match="temperature"):
        EmbedderLoss(temperature=0)
    with pytest.raises(ValueError, match="differ in shape"):
        kl_div_loss(torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="teacher targets"):
        m3_kd_loss(torch.zeros(2, 4), torch.zeros(2, 3), 2)


# ----------------------------------------------------------------------------- weights and teacher diagnostics
def hand_kd_nce(teacher, tt=1.0):
    S = hand_scores()
    kd = 0.0
    for i in range(2):
        tgt = softmax([s / tt for s in teacher[2 * i:2 * i + 2]])
        grp = S[i][2 * i:2 * i + 2]
        kd += -sum(t * (g - lse(grp)) for t, g in zip(tgt, grp))
    nce = ((lse(S[0]) - S[0][0]) + (lse(S[1]) - S[1][2])) / 2
    return kd / 2, nce


@pytest.mark.parametrize("kw, tt", [(0.3, 2.0), (2.0, 0.5), (0.0, 1.0)])
def test_weighted_kl_div_loss_by_hand(kw, tt):
    teacher = [3.0, -1.0, 0.5, 2.0]
    kd, nce = hand_kd_nce(teacher, tt)
    got = EmbedderLoss(temperature=T, teacher_temperature=tt, kd_weight=kw, infonce_weight=0.7)(
        emb(Q), emb(P), teacher).item()
    assert got == pytest.approx(kw * kd + 0.7 * nce, rel=1e-6)
    only_kd = EmbedderLoss(temperature=T, teacher_temperature=tt, infonce_weight=0.0)(emb(Q), emb(P), teacher)
    assert only_kd.item() == pytest.approx(kd, rel=1e-6)


def test_student_temperature_is_separate_from_the_teachers():
    teacher = [3.0, -1.0, 0.5, 2.0]
    a = EmbedderLoss(temperature=T, teacher_temperature=2.0)(emb(Q), emb(P), teacher).item()
    b = EmbedderLoss(temperature=T / 2, teacher_temperature=2.0)(emb(Q), emb(P), teacher).item()
    assert a == pytest.approx(sum(hand_kd_nce(teacher, 2.0)), rel=1e-6) and abs(a - b) > 1e-3


def test_default_weights_are_the_old_loss_bit_for_bit():
    torch.manual_seed(1)
    q = torch.nn.functional.normalize(torch.randn(3, 5), dim=-1).requires_grad_(True)
    p = torch.nn.functional.normalize(torch.randn(12, 5), dim=-1)
    teacher = torch.randn(12) * 4
    new = EmbedderLoss(temperature=0.05)(q, p, teacher)
    S = q @ p.T / 0.05                                          # the old code: kl_div + infonce, unweighted
    old = kl_div_loss(own_group(S, 4), teacher_targets(teacher, 3, 4)) + infonce(S, 4)
    assert new.item() == old.item()
    g_new, = torch.autograd.grad(new, q)
    g_old, = torch.autograd.grad(old, q)
    assert torch.equal(g_new, g_old)
    one = EmbedderLoss(temperature=0.05, kd_weight=1.0, infonce_weight=1.0)(q, p, teacher)
    assert one.item() == old.item()
    m3_old = m3_kd_loss(S, teacher_targets(teacher, 3, 4), 4)   # m3 stays alone by default
    assert EmbedderLoss(temperature=0.05, kd_loss_type="m3_kd_loss")(q, p, teacher).item() == m3_old.item()
    m3_mix = EmbedderLoss(temperature=0.05, kd_loss_type="m3_kd_loss", kd_weight=0.5, infonce_weight=2.0)(q, p, teacher)
    assert m3_mix.item() == pytest.approx(0.5 * m3_old.item() + 2.0 * infonce(S, 4).item(), rel=1e-6)
    # no teacher scores: plain InfoNCE whatever the weights
    assert EmbedderLoss(temperature=0.05, kd_weight=3.0, infonce_weight=0.5)(q, p).item() == infonce(S, 4).item()


def test_bad_weights_are_refused():
    with pytest.raises(ValueError, match="kd_weight"):
        EmbedderLoss(kd_weight=-1.0)
    with pytest.raises(ValueError, match="infonce_weight"):
        EmbedderLoss(infonce_weight=float("nan"))
    with pytest.raises(ValueError, match="both 0"):
        EmbedderLoss(kd_weight=0.0, infonce_weight=0.0)
    with pytest.raises(ValueError, match="both 0"):
        EmbedderLoss(kd_loss_type="m3_kd_loss", kd_weight=0.0)        # m3's InfoNCE weight defaults to 0


def test_teacher_entropy_on_a_constructed_group():
    from helpers.train.losses import TeacherEntropyMeter, teacher_entropy
    h = teacher_entropy(torch.tensor([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]]))
    assert h.tolist() == pytest.approx([math.log(4), 0.0, math.log(2)], abs=1e-6)
    m = TeacherEntropyMeter(teacher_temperature=2.0)
    assert m.result() == {}
    m.update([0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0], 2, 4)     # uniform; one at 2/T = 1 above the rest
    p = softmax([1.0, 0.0, 0.0, 0.0])
    h2 = -sum(x * math.log(x) for x in p)
    r = m.result()
    assert r["teacher_entropy"] == pytest.approx((math.log(4) + h2) / 2, rel=1e-6)
    assert r["teacher_entropy_rel"] == pytest.approx((1.0 + h2 / math.log(4)) / 2, rel=1e-6)
    m.reset()
    assert m.result() == {}


def test_saturation_warning_fires_once_on_a_constructed_spread(caplog):
    import logging

    from helpers.train.losses import teacher_saturation, warn_if_saturated
    groups = [[10.0, -5.0, 0.0], [50.0, -40.0], [1.0, 0.5, 0.0, -0.5], [3.0]]   # spreads 15, 90, 1.5; one too short
    s = teacher_saturation(groups, 1.0)
    assert (s["groups"], s["saturated"], s["one_hot"]) == (3, 1, 1) and s["max_spread_over_t"] == pytest.approx(90)
    assert teacher_saturation(groups, 2.0)["saturated"] == 0               # 90 / 2 = 45 < 80
    with caplog.at_level(logging.INFO, logger="helpers.train.losses"):
        warn_if_saturated(groups, 1.0, what="train.jsonl")
    warns = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warns) == 1 and "1 of 3 groups" in warns[0].getMessage() and "train.jsonl" in warns[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="helpers.train.losses"):
        warn_if_saturated(groups, 2.0)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING] and "no group saturates" in caplog.text
    # the float32 softmax of the saturated group is indeed one-hot (the rest underflows to a denormal)
    top, low = teacher_targets([50.0, -40.0], 1, 2)[0].tolist()
    assert top == 1.0 and low < 1e-35


# ----------------------------------------------------------------------------- in-batch false negatives
def test_false_negative_mask_marks_other_groups_copies_of_the_positive_only():
    from helpers.train.losses import false_negative_mask
    # groups of 2: query 0 (pos A, neg B), query 1 (pos A, neg C), query 2 (pos B, neg A)
    keys = torch.tensor([1, 2, 1, 3, 2, 1])
    m = false_negative_mask(keys, 2).tolist()
    assert m == [[False, False, True, False, False, True],     # A in groups 1 and 2; own group never
                 [True, False, False, False, False, True],
                 [False, True, False, False, False, False]]
    with pytest.raises(ValueError, match="whole groups"):
        false_negative_mask(torch.tensor([1, 2, 3]), 2)


def test_masked_infonce_by_hand_drops_the_false_negative_from_the_softmax():
    # query 1's positive (column 2) is the same text as query 0's positive (column 0)
    keys = torch.tensor([7, 8, 7, 9])
    loss = EmbedderLoss(temperature=T, mask_false_negatives=True)(emb(Q), emb(P), passage_keys=keys)
    S = hand_scores()
    want = ((lse([S[0][0], S[0][1], S[0][3]]) - S[0][0]) + (lse([S[1][1], S[1][2], S[1][3]]) - S[1][2])) / 2
    assert loss.item() == pytest.approx(want, rel=1e-5)
    plain = EmbedderLoss(temperature=T)(emb(Q), emb(P), passage_keys=keys)
    assert plain.item() != pytest.approx(want, rel=1e-3)       # off: the copy counts as a negative
    # distinct texts: masking changes nothing
    same = EmbedderLoss(temperature=T, mask_false_negatives=True)(emb(Q), emb(P), passage_keys=torch.arange(4))
    assert same.item() == pytest.approx(plain.item(), rel=1e-6)


def test_masking_leaves_the_own_group_kd_targets_alone_and_needs_keys():
    keys = torch.tensor([7, 7, 7, 9])     # query 0's negative is a copy of its positive: own group, kept
    teacher = [[2.0, 1.0], [0.5, 1.5]]
    kd = EmbedderLoss(temperature=T, mask_false_negatives=True, infonce_weight=0.0)
    ref = EmbedderLoss(temperature=T, infonce_weight=0.0)
    assert kd(emb(Q), emb(P), teacher, keys).item() == pytest.approx(ref(emb(Q), emb(P), teacher).item())
    assert torch.isfinite(EmbedderLoss(temperature=T, mask_false_negatives=True, kd_loss_type="m3_kd_loss")(
        emb(Q), emb(P), teacher, keys))
    with pytest.raises(ValueError, match=r"passage_keys: one per passage \(4\) needed, got None"):
        EmbedderLoss(temperature=T, mask_false_negatives=True)(emb(Q), emb(P))


def test_group_batches_key_equal_passage_texts_equally():
    from helpers.train.groups import text_key
    assert text_key("Confuses area and perimeter") == text_key(" Confuses area and perimeter\n")
    assert text_key("Confuses area and perimeter") != text_key("Confuses perimeter and area")


def test_masking_across_two_simulated_devices_equals_one_device():
    torch.manual_seed(1)
    q = torch.nn.functional.normalize(torch.randn(4, 3), dim=-1)
    p = torch.nn.functional.normalize(torch.randn(8, 3), dim=-1)     # G = 2
    keys = torch.tensor([5, 6, 7, 8, 5, 9, 7, 5])                    # copies across the two ranks' halves
    full = EmbedderLoss(temperature=0.1, mask_false_negatives=True)(q, p, passage_keys=keys)
    losses = []
    for rank in range(2):
        calls = iter([q.split(2), p.split(4), keys.split(4)])
        def gather(parts, t, calls=calls):
            for r, x in enumerate(next(calls)):
                parts[r].copy_(x)
        losses.append(EmbedderLoss(temperature=0.1, mask_false_negatives=True, negatives_cross_device=True,
                                   world_size=2, rank=rank, all_gather=gather)(
            q.split(2)[rank], p.split(4)[rank], passage_keys=keys.split(4)[rank]).item())
    assert losses[0] == pytest.approx(full.item(), rel=1e-5) and losses[1] == pytest.approx(full.item(), rel=1e-5)
    assert full.item() != pytest.approx(EmbedderLoss(temperature=0.1)(q, p).item(), rel=1e-3)


# ---------- the 1st-place Eedi KD options (issue 29, part 2) ----------
def test_margin_mse_matches_its_formula_and_ignores_a_common_shift():
    from helpers.train.losses import margin_mse_loss
    s = torch.tensor([[3.0, 1.0, 0.0], [2.0, 2.0, 1.0]])
    t = torch.tensor([[5.0, 4.0, 1.0], [0.0, 1.0, 0.0]])
    want = (((3 - 1) - (5 - 4)) ** 2 + ((3 - 0) - (5 - 1)) ** 2 + (0 - (-1)) ** 2 + (1 - 0) ** 2) / 4
    assert float(margin_mse_loss(s, t)) == pytest.approx(want)
    assert float(margin_mse_loss(s + 7, t - 3)) == pytest.approx(want)         # margins only
    with pytest.raises(ValueError, match="differ in shape"):
        margin_mse_loss(s, t[:, :2])
    with pytest.raises(ValueError, match="at least one negative"):
        margin_mse_loss(s[:, :1], t[:, :1])


def test_margin_mse_in_the_loss_is_added_to_infonce():
    from helpers.train.losses import EmbedderLoss, infonce, margin_mse_loss, own_group, similarity
    torch.manual_seed(0)
    q = F.normalize(torch.randn(2, 4), dim=-1)
    p = F.normalize(torch.randn(6, 4), dim=-1)
    t = torch.tensor([3.0, 1.0, 0.0, 2.0, 2.5, -1.0])
    got = EmbedderLoss(temperature=0.05, kd_loss_type="margin_mse", teacher_temperature=2.0)(q, p, t)
    sc = similarity(q, p, 0.05)
    want = margin_mse_loss(own_group(sc, 3), t.view(2, 3) / 2.0) + infonce(sc, 3)
    assert float(got) == pytest.approx(float(want), rel=1e-6)


def test_in_batch_targets_put_the_group_at_its_columns_and_mask_to_zero():
    from helpers.train.losses import in_batch_targets
    t = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    full = in_batch_targets(t, 4, 0, fill=-1.0)
    row0 = torch.softmax(torch.tensor([2.0, 0.0, -1.0, -1.0]), 0)
    row1 = torch.softmax(torch.tensor([-1.0, -1.0, 1.0, 1.0]), 0)
    assert torch.allclose(full, torch.stack([row0, row1]))
    masked = torch.tensor([[False, False, True, False], [False, False, False, False]])
    m = in_batch_targets(t, 4, 0, fill=-1.0, masked=masked)
    assert m[0, 2] == 0 and torch.allclose(m.sum(-1), torch.ones(2))
    assert torch.allclose(in_batch_targets(t[1:], 4, 1, fill=-1.0), full[1:])      # rank 1's rows: offset 1


def test_in_batch_targets_give_a_copy_of_a_scored_passage_its_teacher_score():
    """Query 0 scored passages a (2.0) and b (0.0); query 1's group holds a copy of b and an unscored c:
    the copy of b takes 0.0 in query 0's row, c the fill; query 1 scored neither of query 0's passages."""
    from helpers.train.losses import in_batch_targets
    a, b, c = 11, 12, 13
    t = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    keys = torch.tensor([a, b, c, b])
    got = in_batch_targets(t, 4, 0, fill=-5.0, keys=keys)
    assert torch.allclose(got[0], torch.softmax(torch.tensor([2.0, 0.0, -5.0, 0.0]), 0))
    # query 1 scored c (1.0) and b (3.0): query 0's column b is a copy of its own b
    assert torch.allclose(got[1], torch.softmax(torch.tensor([-5.0, 3.0, 1.0, 3.0]), 0))
    masked = torch.tensor([[False, False, False, True], [False, False, False, False]])
    assert in_batch_targets(t, 4, 0, fill=-5.0, masked=masked, keys=keys)[0, 3] == 0      # the mask wins
    assert torch.allclose(in_batch_targets(t[1:], 4, 1, fill=-5.0, keys=keys), got[1:])  # rank 1: offset 1
    with pytest.raises(ValueError, match="3 passage keys for a row of 4 columns"):
        in_batch_targets(t, 4, 0, fill=-5.0, keys=keys[:3])


def test_in_batch_kd_reads_the_passage_keys_it_is_given():
    from helpers.train.losses import EmbedderLoss
    torch.manual_seed(3)
    q = F.normalize(torch.randn(2, 4), dim=-1)
    p = F.normalize(torch.randn(4, 4), dim=-1)
    t = torch.tensor([2.0, 0.5, 1.0, 3.0])
    loss = EmbedderLoss(temperature=0.05, kd_in_batch_score=-5.0)
    distinct, shared = torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 3, 2])
    assert float(loss(q, p, t, distinct)) == pytest.approx(float(loss(q, p, t)), rel=1e-6)
    assert float(loss(q, p, t, shared)) != pytest.approx(float(loss(q, p, t)), rel=1e-4)


def test_in_batch_kd_with_one_query_is_the_group_kd():
    """One query: the in-batch row is its group, so whatever the fill the loss is kl_div's."""
    from helpers.train.losses import EmbedderLoss
    torch.manual_seed(1)
    q = F.normalize(torch.randn(1, 4), dim=-1)
    p = F.normalize(torch.randn(4, 4), dim=-1)
    t = torch.tensor([2.0, 1.0, 0.5, -1.0])
    a = EmbedderLoss(temperature=0.05)(q, p, t)
    b = EmbedderLoss(temperature=0.05, kd_in_batch_score=-3.0)(q, p, t)
    assert float(a) == pytest.approx(float(b), rel=1e-6)
    with pytest.raises(ValueError, match="kd_in_batch_score works with kd_loss_type kl_div"):
        EmbedderLoss(kd_loss_type="m3_kd_loss", kd_in_batch_score=-3.0)


def test_in_batch_kd_pushes_other_groups_passages_down():
    """Two queries: with a very low fill, the in-batch KD's gradient lowers the other group's scores
    too, which the group KD never touches."""
    from helpers.train.losses import EmbedderLoss
    torch.manual_seed(2)
    q = F.normalize(torch.randn(2, 4), dim=-1).requires_grad_(True)
    p = F.normalize(torch.randn(4, 4), dim=-1)
    t = torch.tensor([2.0, 0.0, 2.0, 0.0])
    for fill, differs in ((None, False), (-20.0, True)):
        kw = {} if fill is None else {"kd_in_batch_score": fill}
        g1 = torch.autograd.grad(EmbedderLoss(temperature=0.05, infonce_weight=0, **kw)(q, p, t), q)[0]
        g0 = torch.autograd.grad(EmbedderLoss(temperature=0.05, infonce_weight=0)(q, p, t), q)[0]
        assert (not torch.allclose(g0, g1)) == differs


def test_auto_teacher_temperature_hits_the_entropy_target():
    from helpers.train.losses import auto_teacher_temperature, teacher_entropy
    groups = [[4.0, 1.0, 0.0, -1.0], [2.0, 1.5, 1.0, -3.0], [0.0, 0.0, 0.0, 0.0]]   # the last: always uniform
    for target in (0.4, 0.5, 0.8):
        t = auto_teacher_temperature(groups, target)
        rel = sum(float(teacher_entropy(torch.softmax(torch.tensor(g) / t, -1).unsqueeze(0))[0]) / math.log(4)
                  for g in groups) / 3
        assert rel == pytest.approx(target, abs=1e-4)
    assert auto_teacher_temperature(groups, 0.4) < auto_teacher_temperature(groups, 0.8)   # softer: hotter
    assert auto_teacher_temperature(groups, 0.3) == 1e-3               # below what the uniform group allows
    assert auto_teacher_temperature([[1.0, 1.0]], 0.5) == 1e-3          # constant groups: already uniform
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        auto_teacher_temperature(groups, 1.0)


def test_kd_args_take_auto_or_a_number_for_the_teacher_temperature():
    from helpers.train.kd_finetune import KDArgs
    assert KDArgs(teacher_temperature="auto").teacher_temperature == "auto"
    assert KDArgs(teacher_temperature="2").teacher_temperature == 2.0
    with pytest.raises(ValueError, match="a number > 0 or auto"):
        KDArgs(teacher_temperature="hot")
