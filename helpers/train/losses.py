"""Contrastive and distillation losses of the embedder (FlagEmbedding's AbsEmbedderModel semantics).

Layout, stated once: ``q`` is [B, D] (one query per group), ``p`` is [B * G, D] with query i's group
at rows ``i*G .. i*G+G-1`` and its positive first. Scores are ``q @ p.T / temperature`` on the
(already normalised) embeddings, so the in-batch score matrix is [B, B * G] and query i's target
column is ``i * G``.

- InfoNCE: cross-entropy over every passage of the batch (and of every device when
  ``negatives_cross_device``) with target ``i * G``.
- ``kl_div``: -mean_i sum_j softmax(teacher_i / teacher_temperature)_j * log_softmax(student_i)_j
  over query i's own group (a cross-entropy against soft targets), ADDED to InfoNCE, as
  FlagEmbedding does.
- ``margin_mse`` (Hofstätter et al.; an option, not FlagEmbedding's): mean over query i and negative
  j of ``((s_i0 - s_ij) - (t_i0 - t_ij))^2``, student scores ``s`` as above (q.p / temperature), teacher
  ``t`` = raw score / teacher_temperature, over the query's own group; ADDED to InfoNCE.
- ``kd_in_batch_score`` (an option, with ``kl_div``): the soft targets cover the whole in-batch row, not
  only the query's group (the 1st-place Eedi solution's KD): the teacher's scores for the own group and
  this fixed raw score for every other group's passage (unscored: "a negative the teacher would score
  this low"), except another group's copy of a passage the teacher scored for this query (same text
  key), which takes that score; a masked false negative gets target 0.
- ``m3_kd_loss``: FlagEmbedding's BGE-M3 distillation over the in-batch matrix, used ALONE (no
  InfoNCE added, as FlagEmbedding): for each group position j, cross-entropy towards column
  ``i*G+j`` with the columns of earlier positions masked out, weighted by the teacher's
  probability of j.
- No teacher scores: InfoNCE only (hard negatives, the earlier rounds).

Weights: ``loss = kd_weight * KD + infonce_weight * InfoNCE``. ``kd_weight`` defaults to 1;
``infonce_weight`` None means FlagEmbedding's combination for the loss type (1 for ``kl_div``, 0
for ``m3_kd_loss``), so the defaults are exactly FlagEmbedding's loss. Without teacher scores the
loss is plain InfoNCE whatever the weights. ``temperature`` is the student's (FlagEmbedding's
name), ``teacher_temperature`` the teacher's (FlagEmbedding fixes it at 1).

Teacher diagnostics: :func:`teacher_saturation` (a group whose score spread / teacher_temperature
is above ~80 has a float32 softmax whose smallest entries underflow: the target is (nearly)
one-hot), :func:`teacher_entropy` and :class:`TeacherEntropyMeter` (the per-group entropy of the
targets, absolute and relative to log(group size)).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

KD_LOSS_TYPES = ("kl_div", "m3_kd_loss", "margin_mse")
SATURATION_SPREAD = 80.0       # spread / teacher_temperature above this: exp(-spread) < 2e-35, the softmax saturates

log = logging.getLogger(__name__)


def check_finite(t: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what} contains NaN or infinity")


def group_size_of(q: torch.Tensor, p: torch.Tensor) -> int:
    if q.dim() != 2 or p.dim() != 2 or q.shape[1] != p.shape[1]:
        raise ValueError(f"embeddings must be [B, D] and [B*G, D]; got q {tuple(q.shape)}, "
                         f"p {tuple(p.shape)}")
    if q.shape[0] == 0 or p.shape[0] % q.shape[0] != 0:
        raise ValueError(f"{p.shape[0]} passages are not a whole number of groups for "
                         f"{q.shape[0]} queries")
    return p.shape[0] // q.shape[0]


def similarity(q: torch.Tensor, p: torch.Tensor, temperature: float) -> torch.Tensor:
    """[B, B*G] = q @ p.T / temperature."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return q @ p.transpose(0, 1) / temperature


def own_group(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """[B, B*G] in-batch scores -> [B, G]: query i's scores for its own group."""
    B = scores.shape[0]
    if scores.shape[1] < B * group_size:
        raise ValueError(f"scores {tuple(scores.shape)} too narrow for {B} groups of {group_size}")
    cols = torch.arange(B, device=scores.device).unsqueeze(1) * group_size + \
        torch.arange(group_size, device=scores.device).unsqueeze(0)
    return scores.gather(1, cols)


def false_negative_mask(passage_keys: torch.Tensor, group_size: int) -> torch.Tensor:
    """[B*G] passage text keys -> [B, B*G] bool: True where an other group's passage is the same
    text as query i's positive (column i*G), i.e. an in-batch "negative" that is really positive
    (another wrong answer with the same misconception). The own group is never masked, so the KD
    terms, which read it, see every passage the teacher scored."""
    keys = passage_keys.reshape(-1)
    if keys.numel() % group_size:
        raise ValueError(f"{keys.numel()} passage keys are not whole groups of {group_size}")
    B = keys.numel() // group_size
    mask = keys.view(B, group_size)[:, :1] == keys.unsqueeze(0)
    own = torch.arange(B * group_size, device=keys.device).unsqueeze(0) // group_size == \
        torch.arange(B, device=keys.device).unsqueeze(1)
    return mask & ~own


def infonce(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """Cross-entropy over all passages in the batch; query i's positive is column i*G."""
    targets = torch.arange(scores.shape[0], device=scores.device) * group_size
    return F.cross_entropy(scores, targets)


def teacher_targets(teacher_scores, batch_size: int, group_size: int,
                    teacher_temperature: float = 1.0, device=None) -> torch.Tensor:
    """Flat or [B, G] raw teacher scores -> softmax(scores / teacher_temperature) per group."""
    if not teacher_temperature > 0:
        raise ValueError(f"teacher_temperature must be > 0, got {teacher_temperature}")
    t = torch.as_tensor(teacher_scores, dtype=torch.float32, device=device)
    if t.numel() != batch_size * group_size:
        raise ValueError(f"got {t.numel()} teacher scores for {batch_size} queries x {group_size} "
                         "passages (one score per passage of every group is needed)")
    check_finite(t, "teacher scores")
    return torch.softmax(t.view(batch_size, group_size).detach() / teacher_temperature, dim=-1)


def kl_div_loss(student_group: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-mean_i sum_j targets_ij * log_softmax(student_i)_j (FlagEmbedding's 'kl_div')."""
    if student_group.shape != targets.shape:
        raise ValueError(f"student {tuple(student_group.shape)} and teacher {tuple(targets.shape)} "
                         "group scores differ in shape")
    logp = torch.log_softmax(student_group.float(), dim=-1)
    return -(logp * targets).sum(dim=-1).mean()


def margin_mse_loss(student_group: torch.Tensor, teacher_group: torch.Tensor) -> torch.Tensor:
    """mean_ij ((s_i0 - s_ij) - (t_i0 - t_ij))^2 over the negatives j >= 1 of [B, G] group scores."""
    if student_group.shape != teacher_group.shape:
        raise ValueError(f"student {tuple(student_group.shape)} and teacher {tuple(teacher_group.shape)} "
                         "group scores differ in shape")
    if student_group.shape[1] < 2:
        raise ValueError("margin_mse needs groups with at least one negative (train_group_size >= 2)")
    s, t = student_group.float(), teacher_group.float()
    return ((s[:, :1] - s[:, 1:]) - (t[:, :1] - t[:, 1:])).pow(2).mean()


def in_batch_targets(teacher_group: torch.Tensor, n_cols: int, offset: int, fill: float,
                     masked: Optional[torch.Tensor] = None, keys: Optional[torch.Tensor] = None) -> torch.Tensor:
    """[B, G] raw teacher scores (already / teacher_temperature) -> [B, n_cols] soft targets over the
    whole in-batch row: query i's own group at columns (offset + i) * G + j, ``fill`` everywhere else,
    0 where ``masked`` ([B, n_cols] bool: false negatives) is True.

    ``keys`` ([n_cols] passage text keys of the row's columns): another group's copy of a passage that
    the teacher scored for query i (one of i's own group) takes that score instead of ``fill``: a
    cross pair the teacher did score (on Eedi a hard negative's own query, pulled into the batch by
    ``hard_negative_queries``, brings exactly such a copy)."""
    B, G = teacher_group.shape
    t = teacher_group.float()
    row = torch.full((B, n_cols), float(fill), dtype=torch.float32, device=t.device)
    if keys is not None:
        if keys.numel() != n_cols:
            raise ValueError(f"{keys.numel()} passage keys for a row of {n_cols} columns")
        keys = keys.reshape(-1).to(t.device)
        own_keys = keys.view(-1, G)[offset:offset + B]                       # [B, G]
        same = own_keys.unsqueeze(2) == keys.view(1, 1, n_cols)              # [B, G, n_cols]
        known = torch.where(same, t.unsqueeze(2), float("-inf")).amax(dim=1)      # [B, n_cols]
        row = torch.where(same.any(dim=1), known, row)
    cols = (torch.arange(B, device=row.device).unsqueeze(1) + offset) * G + torch.arange(G, device=row.device)
    row = row.scatter(1, cols, t)
    if masked is not None:
        row = row.masked_fill(masked, float("-inf"))
    return torch.softmax(row, dim=-1)


def m3_kd_loss(scores: torch.Tensor, targets: torch.Tensor, group_size: int) -> torch.Tensor:
    """FlagEmbedding's m3_kd_loss over the [B, B*G] in-batch scores with [B, G] teacher targets."""
    B = scores.shape[0]
    if targets.shape != (B, group_size):
        raise ValueError(f"teacher targets {tuple(targets.shape)} != ({B}, {group_size})")
    scores = scores.float()
    labels = torch.arange(B, device=scores.device) * group_size
    mask = torch.zeros_like(scores)
    loss = scores.new_zeros(())
    for j in range(group_size):
        ce = F.cross_entropy(scores + mask, labels + j, reduction="none")
        loss = loss + (targets[:, j] * ce).mean()
        mask = mask.scatter(1, (labels + j).unsqueeze(1), torch.finfo(scores.dtype).min)
    return loss


def gather_keep_grad(t: torch.Tensor, world_size: int, rank: int,
                     all_gather: Optional[Callable] = None) -> torch.Tensor:
    """Concatenate ``t`` from every rank (rank order); this rank's slice keeps its gradient.

    ``all_gather(list_of_empty, t)`` defaults to ``torch.distributed.all_gather``; tests pass a
    simulated one.
    """
    if all_gather is None:
        import torch.distributed as dist
        all_gather = dist.all_gather
    t = t.contiguous()
    parts = [torch.empty_like(t) for _ in range(world_size)]
    all_gather(parts, t.detach())
    parts[rank] = t
    return torch.cat(parts, dim=0)


@dataclass
class EmbedderLoss:
    """Loss of one batch (or, across devices, of this rank's part of it)."""
    temperature: float = 0.02
    kd_loss_type: str = "kl_div"
    teacher_temperature: float = 1.0
    kd_weight: float = 1.0
    infonce_weight: Optional[float] = None      # None: 1 for kl_div, 0 for m3_kd_loss (FlagEmbedding's)
    negatives_cross_device: bool = False
    mask_false_negatives: bool = False          # other groups' copies of a query's positive are not its negatives
    kd_in_batch_score: Optional[float] = None   # kl_div over the whole in-batch row; other groups' passages at this raw score
    world_size: int = 1
    rank: int = 0
    all_gather: Optional[Callable] = None

    def __post_init__(self):
        if self.kd_loss_type not in KD_LOSS_TYPES:
            raise ValueError(f"kd_loss_type {self.kd_loss_type!r} unknown; choose one of {KD_LOSS_TYPES}")
        if not self.temperature > 0 or not math.isfinite(self.temperature):
            raise ValueError(f"temperature must be a positive number, got {self.temperature}")
        self.kd_w, self.nce_w = loss_weights(self.kd_loss_type, self.kd_weight, self.infonce_weight)
        if self.kd_in_batch_score is not None and self.kd_loss_type != "kl_div":
            raise ValueError(f"kd_in_batch_score works with kd_loss_type kl_div, not {self.kd_loss_type}")

    def __call__(self, q: torch.Tensor, p: torch.Tensor, teacher_scores=None,
                 passage_keys: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``passage_keys``: [B*G] ints, equal for equal passage texts (:func:`helpers.train.groups.text_key`);
        needed when ``mask_false_negatives``; with ``kd_in_batch_score`` they let another group's copy of a
        passage the teacher scored for this query keep that score (without them: ``fill`` for all others)."""
        G = group_size_of(q, p)
        B = q.shape[0]
        # Non-finite embeddings (an fp16 overflow) are not bad input: they make the loss NaN, and the
        # loop skips that optimizer step on every rank (raising here would kill one rank of a DDP run).
        targets = None
        if teacher_scores is not None:
            targets = teacher_targets(teacher_scores, B, G, self.teacher_temperature, q.device)
        cross = self.negatives_cross_device and self.world_size > 1
        if cross:
            q_all = gather_keep_grad(q, self.world_size, self.rank, self.all_gather)
            p_all = gather_keep_grad(p, self.world_size, self.rank, self.all_gather)
        else:
            q_all, p_all = q, p
        scores = similarity(q_all.float(), p_all.float(), self.temperature)
        in_batch_kd = targets is not None and self.kd_in_batch_score is not None and self.kd_loss_type == "kl_div"
        keys = None     # read by the false-negative mask and, when given, by the in-batch KD's known cross pairs
        if self.mask_false_negatives or (in_batch_kd and passage_keys is not None):
            if passage_keys is None or passage_keys.numel() != p.shape[0]:
                raise ValueError(f"passage_keys: one per passage ({p.shape[0]}) needed, got "
                                 f"{None if passage_keys is None else passage_keys.numel()}")
            keys = passage_keys.to(scores.device)
            if cross:
                keys = gather_keep_grad(keys, self.world_size, self.rank, self.all_gather)
        if self.mask_false_negatives:
            masked = false_negative_mask(keys, G)
            scores = scores.masked_fill(masked, torch.finfo(scores.dtype).min)
        if targets is None:
            return infonce(scores, G)
        lo = self.rank * B if cross else 0
        if in_batch_kd:
            raw = torch.as_tensor(teacher_scores, dtype=torch.float32, device=q.device).view(B, G)
            rows = scores[lo:lo + B]
            full = in_batch_targets(raw / self.teacher_temperature, rows.shape[1], lo,
                                    self.kd_in_batch_score / self.teacher_temperature,
                                    masked[lo:lo + B] if self.mask_false_negatives else None, keys)
            kd = kl_div_loss(rows, full)
        elif self.kd_loss_type in ("kl_div", "margin_mse"):
            local = own_group(scores, G)[lo:lo + B]
            if self.kd_loss_type == "kl_div":
                kd = kl_div_loss(local, targets)
            else:
                raw = torch.as_tensor(teacher_scores, dtype=torch.float32, device=q.device).view(B, G)
                kd = margin_mse_loss(local, raw / self.teacher_temperature)
        else:
            if cross:
                targets = gather_keep_grad(targets, self.world_size, self.rank, self.all_gather)
            kd = m3_kd_loss(scores, targets, G)
        return combine(kd, infonce(scores, G) if self.nce_w else None, self.kd_w, self.nce_w)


def loss_weights(kd_loss_type: str, kd_weight: float = 1.0, infonce_weight: Optional[float] = None):
    """-> (kd_weight, infonce_weight) with None resolved (1 for kl_div and margin_mse, 0 for m3_kd_loss); checked."""
    nce = (0.0 if kd_loss_type == "m3_kd_loss" else 1.0) if infonce_weight is None else infonce_weight
    for name, v in (("kd_weight", kd_weight), ("infonce_weight", nce)):
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a number >= 0, got {v!r}")
    if kd_weight == 0 and nce == 0:
        raise ValueError("kd_weight and infonce_weight are both 0: nothing to train on")
    return float(kd_weight), float(nce)


def combine(kd: torch.Tensor, nce: Optional[torch.Tensor], kd_weight: float, infonce_weight: float) -> torch.Tensor:
    """kd_weight * kd + infonce_weight * nce; a weight of 1 multiplies nothing (the default loss is
    bit for bit FlagEmbedding's sum), a weight of 0 leaves its term out."""
    parts = []
    if kd_weight:
        parts.append(kd if kd_weight == 1 else kd_weight * kd)
    if infonce_weight and nce is not None:
        parts.append(nce if infonce_weight == 1 else infonce_weight * nce)
    out = parts[0]
    for t in parts[1:]:
        out = out + t
    return out


# ----------------------------------------------------------------------------- teacher diagnostics
def teacher_entropy(targets: torch.Tensor) -> torch.Tensor:
    """[B, G] teacher distributions -> [B] entropies in nats (0 log 0 = 0)."""
    t = targets.float()
    return -(torch.where(t > 0, t * torch.log(t.clamp_min(1e-45)), torch.zeros_like(t))).sum(dim=-1)


class TeacherEntropyMeter:
    """Mean per-group entropy of the teacher targets over the groups it has seen (one epoch)."""

    def __init__(self, teacher_temperature: float = 1.0):
        self.teacher_temperature = teacher_temperature
        self.reset()

    def reset(self) -> None:
        self.n, self.total, self.total_rel = 0, 0.0, 0.0

    @torch.no_grad()
    def update(self, teacher_scores, batch_size: int, group_size: int) -> None:
        if teacher_scores is None or group_size < 2:
            return
        h = teacher_entropy(teacher_targets(teacher_scores, batch_size, group_size, self.teacher_temperature))
        self.n += h.numel()
        self.total += float(h.sum())
        self.total_rel += float(h.sum()) / math.log(group_size)

    def result(self) -> dict:
        """``teacher_entropy`` (mean nats per group) and ``teacher_entropy_rel`` (mean of H / log G:
        1 = uniform targets, 0 = one-hot); empty when no group was seen."""
        if not self.n:
            return {}
        return {"teacher_entropy": self.total / self.n, "teacher_entropy_rel": self.total_rel / self.n}


def auto_teacher_temperature(groups, target: float = 0.5, lo: float = 1e-3, hi: float = 1e3) -> float:
    """The teacher temperature whose mean group entropy (of softmax(scores / T), relative to log of
    the group's size) is ``target`` (0 < target < 1; 1 = uniform targets, 0 = one-hot): entropy rises
    with T, so a bisection on log T in [lo, hi] finds it. Groups of one passage are left out."""
    if not 0 < target < 1:
        raise ValueError(f"teacher entropy target must be in (0, 1), got {target}")
    gs = [torch.tensor([float(x) for x in g], dtype=torch.float64) for g in groups if len(g) >= 2]
    if not gs:
        raise ValueError("auto teacher temperature: no group with two or more scores")

    def rel(t: float) -> float:
        return sum(float(teacher_entropy(torch.softmax(g / t, -1).unsqueeze(0))[0]) / math.log(len(g))
                   for g in gs) / len(gs)
    a, b = math.log(lo), math.log(hi)
    if rel(math.exp(a)) >= target:
        return lo
    if rel(math.exp(b)) <= target:
        return hi
    for _ in range(60):
        m = (a + b) / 2
        a, b = (m, b) if rel(math.exp(m)) < target else (a, m)
    return float(math.exp((a + b) / 2))


def teacher_saturation(groups, teacher_temperature: float = 1.0, threshold: float = SATURATION_SPREAD) -> dict:
    """Score lists (one per group) -> how many saturate the float32 softmax at this temperature.

    ``saturated``: groups with (max - min) / teacher_temperature > ``threshold`` (the lowest
    target underflows to about 0); ``one_hot``: groups whose float32 target has a top probability
    of exactly 1.0 (everything else rounds away)."""
    if not teacher_temperature > 0:
        raise ValueError(f"teacher_temperature must be > 0, got {teacher_temperature}")
    spreads, one_hot = [], 0
    for g in groups:
        if len(g) < 2:
            continue
        t = torch.tensor([float(x) for x in g], dtype=torch.float32)
        spreads.append(float(t.max() - t.min()) / teacher_temperature)
        one_hot += bool(torch.softmax(t / teacher_temperature, dim=-1).max() == 1.0)
    n = len(spreads)
    return {"groups": n, "saturated": sum(s > threshold for s in spreads), "one_hot": one_hot,
            "max_spread_over_t": max(spreads) if n else 0.0, "threshold": threshold}


def warn_if_saturated(groups, teacher_temperature: float = 1.0, what: str = "teacher scores",
                      threshold: float = SATURATION_SPREAD) -> dict:
    """:func:`teacher_saturation`, with ONE warning when any group saturates (else one info line)."""
    s = teacher_saturation(groups, teacher_temperature, threshold)
    if s["saturated"]:
        log.warning("%s: %d of %d groups have a score spread / teacher_temperature above %g (largest %.1f): the "
                    "float32 teacher softmax saturates there (its lowest targets underflow; %d groups have a "
                    "one-hot float32 target), so KD on them is cross-entropy on the teacher's top passage; a "
                    "teacher_temperature of at least %.3g avoids it", what, s["saturated"], s["groups"], threshold,
                    s["max_spread_over_t"], s["one_hot"], s["max_spread_over_t"] * teacher_temperature / threshold)
    else:
        log.info("%s: no group saturates the teacher softmax (largest spread / teacher_temperature %.1f; %d of %d "
                 "groups have a one-hot float32 target)", what, s["max_spread_over_t"], s["one_hot"], s["groups"])
    return s
