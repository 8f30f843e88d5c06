"""The training objective: one nn.Module behind one forward(), so DDP and DeepSpeed can wrap it.

Given a `layout.Batch`, it builds the talker's input embeddings with the model's own modules (text embedding THEN
text_projection, codec rows, summed frames, speaker vectors), runs the talker once, and computes

- the codebook-0 loss: cross-entropy of `codec_head` logits at every supervised position against the label the
  layout put there (the next frame's codebook 0, or EOS). No further shifting happens anywhere.
- the sub-talker loss: for every target frame, the code predictor is fed [talker hidden state of the position that
  predicted codebook 0 of that frame, codebook-0 embedding, codebook 1..14 embeddings] exactly as its generate()
  prefill + decode steps see them; head i (i = 1..15) is scored on codebook i with a cross-entropy computed here
  (transformers' causal-LM loss would shift the labels again).

loss = codebook0_loss + sub_talker_weight * sub_talker_loss, each a mean per target: per supervised position for
codebook 0, per (frame, codebook 1..15) prediction for the sub-talker.

Training passes `targets`, the number of each kind of target in the whole optimizer step (all micro-batches, all
ranks): each micro-batch's loss is then its sum over its targets divided by the step's count, so the gradients the
micro-batches add up to are those of the step's mean, however the targets fall across micro-batches and ranks
(frame-budget batches differ in real frames). Without `targets` (eval) the loss is the batch's own mean.

`sample_sub_talker_frames` draws the frames whose sub-talker loss a training step computes (`objective.
sub_talker_frames`): the sub-talker runs on 16 positions for every frame it scores, so it costs about as much as
the whole talker at the released shapes; scoring a random share is an unbiased estimate of the full loss, as
Sesame's CSM did with 1/16 of its frames. The codebook-0 loss always covers every position.

The same module computes training loss, held-out eval loss and `qwen-swe eval`'s teacher-forced numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .layout import IGNORE, Batch
from .model_shapes import SUPPRESSED_CODEC_ROWS


class StepTargets(NamedTuple):
    """How many targets of each kind a whole optimizer step scores (summed over its micro-batches and ranks)."""

    codebook0: float
    sub_talker: float


def count_targets(batch: Batch) -> tuple[int, int]:
    """(supervised codebook-0 positions, sub-talker predictions) of one batch, known before any forward."""
    groups = int(batch.frames.shape[1]) if batch.frames.dim() == 2 else 0
    return int((batch.labels != IGNORE).sum()), int(batch.sub_frames.numel()) * max(groups - 1, 0)


def frame_sampling_generator(*seed_parts: int) -> torch.Generator:
    """A generator seeded by (run seed, optimizer step, micro-batch, rank): a resumed run draws the same frames."""
    digest = hashlib.sha256("/".join(str(int(part)) for part in seed_parts).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def sample_sub_talker_frames(batch: Batch, share: float, generator: torch.Generator) -> Batch:
    """The batch with the sub-talker scored on a uniform draw without replacement of `share` of its target frames
    (at least one); share 1 returns the batch itself. Only the sub-talker's frame lists change."""
    count = int(batch.sub_frames.numel())
    if share >= 1.0 or count == 0:
        return batch
    keep = max(1, round(share * count))
    chosen = torch.randperm(count, generator=generator)[:keep].sort().values
    return dataclasses.replace(batch, sub_batch=batch.sub_batch[chosen], sub_positions=batch.sub_positions[chosen],
                               sub_frames=batch.sub_frames[chosen])


class TalkerObjective(nn.Module):
    """Wraps a `Qwen3TTSForConditionalGeneration` and scores batches the way inference would run them.

    mask_suppressed_logits: generate() suppresses codec rows [vocab - SUPPRESSED_CODEC_ROWS, vocab) except EOS
    before sampling codebook 0. With this on (default), the codebook-0 cross-entropy is taken over the rows inference
    can emit, i.e. it is the negative log-likelihood of the distribution inference samples from (before
    temperature/top-k).
    """

    def __init__(self, model: nn.Module, sub_talker_weight: float = 0.3, mask_suppressed_logits: bool = True):
        super().__init__()
        self.model = model
        self.sub_talker_weight = float(sub_talker_weight)
        talker_config = model.config.talker_config
        vocab = int(talker_config.vocab_size)
        allowed = torch.ones(vocab, dtype=torch.bool)
        if mask_suppressed_logits:
            allowed[vocab - SUPPRESSED_CODEC_ROWS:] = False
            allowed[int(talker_config.codec_eos_token_id)] = True
        self.register_buffer("allowed_rows", allowed, persistent=False)
        self.num_code_groups = int(talker_config.num_code_groups)

    # ------------------------------------------------------------------------------------------ embeddings
    @property
    def talker(self) -> nn.Module:
        return self.model.talker

    def frame_embeddings(self, frames: torch.Tensor) -> torch.Tensor:
        """[F, G] codes -> [F, hidden]: codebook 0 through the talker's codec rows, 1..15 through the predictor's."""
        talker = self.talker
        parts = [talker.get_input_embeddings()(frames[:, :1])]
        predictor_rows = talker.code_predictor.get_input_embeddings()
        for group in range(1, self.num_code_groups):
            parts.append(predictor_rows[group - 1](frames[:, group:group + 1]))
        return torch.cat(parts, dim=1).sum(1)

    def input_embeddings(self, batch: Batch) -> torch.Tensor:
        """[B, L, hidden]: text channel + codec channel for every position, as generate() builds them."""
        talker = self.talker
        text = talker.text_projection(talker.get_text_embeddings()(batch.text_ids))
        # No `if mask.any()` around the writes below: an empty write is a no-op, and a Python branch on a device
        # tensor would read it back to the host (a stall on a GPU, per micro-batch). `torch.where` keeps the shapes
        # fixed as well.
        # under bf16 autocast the text channel comes out of a Linear in bf16 while embeddings stay fp32
        special = (batch.codec_ids >= 0).unsqueeze(-1)
        codec = torch.where(special, talker.get_input_embeddings()(batch.codec_ids.clamp(min=0)).to(text.dtype), 0.0)
        framed = (batch.frame_ids >= 0).unsqueeze(-1)
        frames = self.frame_embeddings(batch.frames)[batch.frame_ids.clamp(min=0)] if batch.frames.shape[0] else \
            torch.zeros_like(text)
        codec = torch.where(framed, frames.to(text.dtype), codec)
        # the speaker slot holds the sample's x-vector (shards store the speaker encoder's output)
        rows = torch.arange(text.shape[0], device=text.device)
        slots = batch.speaker_positions.clamp(min=0)
        has_speaker = (batch.speaker_positions >= 0).unsqueeze(-1)
        vectors = batch.xvectors if batch.xvectors is not None else torch.zeros_like(text[:, 0])
        codec[rows, slots] = torch.where(has_speaker, vectors.to(text.dtype), codec[rows, slots])
        return text + codec

    # ------------------------------------------------------------------------------------------ forward
    def talker_forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden [B, L, H], codebook-0 logits [B, L, vocab]) for the whole teacher-forced sequence."""
        talker = self.talker
        embeds = self.input_embeddings(batch)
        out = talker.model(
            inputs_embeds=embeds,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
        )
        hidden = out.last_hidden_state
        return hidden, talker.codec_head(hidden)

    def sub_talker_inputs(self, hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
        """[N, G, H]: what the code predictor sees for each target frame, over its prefill and decode steps."""
        talker = self.talker
        frames = batch.frames[batch.sub_frames]  # [N, G]
        predictor_hidden = hidden[batch.sub_batch, batch.sub_positions]  # [N, H]
        parts = [predictor_hidden.unsqueeze(1), talker.get_input_embeddings()(frames[:, :1])]
        predictor_rows = talker.code_predictor.get_input_embeddings()
        for group in range(1, self.num_code_groups - 1):
            parts.append(predictor_rows[group - 1](frames[:, group:group + 1]))
        return torch.cat(parts, dim=1)

    def sub_talker_logits(self, hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
        """[N, G-1, 2048]: head i (1..15) scores codebook i of every target frame."""
        inputs = self.sub_talker_inputs(hidden, batch)
        return self.talker.code_predictor.forward_finetune(inputs_embeds=inputs).logits

    def forward(self, batch: Batch, targets: Optional[StepTargets] = None) -> dict[str, torch.Tensor]:
        """The loss and its parts for one batch; with `targets` the loss is this batch's share of the step's mean
        (see the module docstring), the reported parts stay this batch's own means."""
        hidden, logits = self.talker_forward(batch)
        supervised = batch.labels != IGNORE
        cb0_logits = logits[supervised].float()
        cb0_logits = cb0_logits.masked_fill(~self.allowed_rows, float("-inf"))
        cb0_labels = batch.labels[supervised]
        codebook0_sum = F.cross_entropy(cb0_logits, cb0_labels, reduction="sum")

        sub_logits = self.sub_talker_logits(hidden, batch).float()  # [N, 15, 2048]
        sub_labels = batch.frames[batch.sub_frames][:, 1:]  # [N, 15]
        per_group = F.cross_entropy(
            sub_logits.reshape(-1, sub_logits.shape[-1]), sub_labels.reshape(-1), reduction="none"
        ).view(sub_labels.shape)
        sub_talker_sum = per_group.sum()
        codebook0_count, sub_talker_count = cb0_labels.numel(), per_group.numel()
        codebook0_loss = codebook0_sum / codebook0_count
        sub_talker_loss = sub_talker_sum / sub_talker_count
        if targets is None:
            loss = codebook0_loss + self.sub_talker_weight * sub_talker_loss
        else:
            loss = codebook0_sum / targets.codebook0 + self.sub_talker_weight * sub_talker_sum / targets.sub_talker

        with torch.no_grad():
            eos = cb0_labels == int(self.talker.config.codec_eos_token_id)
            correct = cb0_logits.argmax(-1) == cb0_labels
            sub_correct = (sub_logits.argmax(-1) == sub_labels).float()
            metrics = {
                "codebook0_accuracy": correct.float().mean(),
                # as a ratio of sums, not a branch on eos.any() (a read back to the host per micro-batch)
                "eos_accuracy": (correct & eos).sum().float() / eos.sum().clamp(min=1).float(),
                "sub_talker_accuracy": sub_correct.mean(),
                "sub_talker_accuracy_per_group": sub_correct.mean(0),
                "sub_talker_loss_per_group": per_group.detach().mean(0),
                "frames": torch.tensor(float(sub_labels.shape[0]), device=loss.device),
                "codebook0_targets": torch.tensor(float(codebook0_count), device=loss.device),
                "sub_talker_targets": torch.tensor(float(sub_talker_count), device=loss.device),
                "positions": batch.attention_mask.sum().float(),
                "padded_positions": torch.tensor(float(batch.attention_mask.numel()), device=loss.device),
            }
        return {
            "loss": loss,
            "codebook0_loss": codebook0_loss.detach(),
            "sub_talker_loss": sub_talker_loss.detach(),
            **metrics,
        }


class ScoreTally:
    """Sums of TalkerObjective outputs over batches, for held-out scores: the trainer's eval (summed across ranks)
    and `qwen-swe eval` (one per layout, then all together) both report these means.

    Each frame-weighted metric is a per-batch mean times the batch's target frames, so the result is the mean per
    frame over everything scored, not a mean of batch means; EOS accuracy is weighted by samples (one EOS each).
    """

    FRAME_WEIGHTED = ("loss", "codebook0_loss", "sub_talker_loss", "codebook0_accuracy", "sub_talker_accuracy")

    def __init__(self, sums: Optional[torch.Tensor] = None, device: torch.device | str = "cpu"):
        # [frame-weighted sums..., eos_accuracy x samples, frames, samples], in float64 so long evals do not drift
        self.sums = sums if sums is not None else torch.zeros(len(self.FRAME_WEIGHTED) + 3, dtype=torch.float64,
                                                               device=device)

    def add(self, out: dict[str, torch.Tensor], samples: int) -> None:
        frames = float(out["frames"])
        values = [float(out[name]) * frames for name in self.FRAME_WEIGHTED]
        values += [float(out["eos_accuracy"]) * samples, frames, float(samples)]
        self.sums += torch.tensor(values, dtype=torch.float64, device=self.sums.device)

    def __add__(self, other: "ScoreTally") -> "ScoreTally":
        return ScoreTally(self.sums + other.sums.to(self.sums.device))

    @property
    def frames(self) -> float:
        return float(self.sums[-2])

    def means(self) -> dict[str, float]:
        """The metrics' means, plus the frames and samples they cover (all zero when nothing was scored)."""
        sums = self.sums.tolist()
        frames, samples = sums[-2], sums[-1]
        means = {name: value / max(frames, 1.0) for name, value in zip(self.FRAME_WEIGHTED, sums)}
        return {**means, "eos_accuracy": sums[-3] / max(samples, 1.0), "frames": frames, "samples": samples}
