"""The objective: the loss is an explicit one-shift cross-entropy, every head trains, bad input is named."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from qwen_swe.layout import IGNORE, LAYOUTS, Sample, SequenceLayout
from qwen_swe.objective import TalkerObjective

from .helpers import fresh_swedish_model, load_swedish_model, random_samples


@pytest.fixture(scope="module", params=["tiny_06b", "tiny_17b"])
def setup(request):
    source = request.getfixturevalue(request.param)
    wrapper = load_swedish_model(source)
    layout = SequenceLayout(wrapper.model.config, wrapper.processor.tokenizer)
    wrapper.source = source
    return wrapper, layout


def explicit_losses(objective: TalkerObjective, layout: SequenceLayout, samples, name: str):
    """Cross-entropy written out position by position, independent of the layout's label tensors."""
    model = objective.model
    eos = model.config.talker_config.codec_eos_token_id
    vocab = model.config.talker_config.vocab_size
    allowed = torch.zeros(vocab, dtype=torch.bool)
    allowed[:2048] = True
    allowed[eos] = True
    laid = [layout.build(s, name) for s in samples]
    batch = layout.collate(laid)
    hidden, logits = objective.talker_forward(batch)
    cb0_terms, sub_terms = [], []
    for row, (sample, item) in enumerate(zip(samples, laid)):
        target = sample.codes
        offset = item.frames.shape[0] - target.shape[0]  # ICL frames start with the reference
        frame_position = {int(f) - offset: p for p, f in enumerate(item.frame_ids.tolist()) if f >= offset}
        for t in range(target.shape[0] + 1):
            # The position fed frame t-1 (or the last prompt position for t = 0) predicts frame t (or EOS).
            position = frame_position[t - 1] if t > 0 else frame_position[0] - 1
            label = int(target[t, 0]) if t < target.shape[0] else eos
            log_probs = torch.log_softmax(logits[row, position].masked_fill(~allowed, float("-inf")), -1)
            cb0_terms.append(-log_probs[label])
            if t < target.shape[0]:
                talker = model.talker
                inputs = [hidden[row, position]] + [talker.get_input_embeddings()(target[t, 0])]
                inputs += [talker.code_predictor.get_input_embeddings()[g - 1](target[t, g]) for g in range(1, 15)]
                head_logits = talker.code_predictor.forward_finetune(inputs_embeds=torch.stack(inputs)[None]).logits[0]
                for head in range(15):  # head 0 of the predictor scores codebook 1, ..., head 14 codebook 15
                    sub_terms.append(-torch.log_softmax(head_logits[head], -1)[int(target[t, head + 1])])
    return torch.stack(cb0_terms).mean(), torch.stack(sub_terms).mean(), batch, logits


@pytest.mark.parametrize("name", LAYOUTS)
def test_loss_equals_explicit_one_shift_cross_entropy(setup, name):
    wrapper, layout = setup
    objective = TalkerObjective(wrapper.model, sub_talker_weight=0.3).eval()
    samples = random_samples(wrapper.model, count=3, seed=1)
    with torch.no_grad():
        out = objective(layout.collate([layout.build(s, name) for s in samples]))
        cb0, sub, batch, logits = explicit_losses(objective, layout, samples, name)
    assert torch.allclose(out["codebook0_loss"], cb0, atol=1e-5), (out["codebook0_loss"], cb0)
    assert torch.allclose(out["sub_talker_loss"], sub, atol=1e-5), (out["sub_talker_loss"], sub)
    assert torch.allclose(out["loss"], cb0 + 0.3 * sub, atol=1e-5)
    assert int(out["frames"]) == sum(int(s.codes.shape[0]) for s in samples)
    # EOS is supervised once per sample.
    eos = wrapper.model.config.talker_config.codec_eos_token_id
    assert int((batch.labels == eos).sum()) == len(samples)


def test_training_learns_the_next_frame_not_the_one_after(setup):
    """Guard against labels shifted twice: after fitting, the one-shift loss is far below the two-shift one."""
    wrapper, layout = setup
    model = fresh_swedish_model(wrapper.source)
    model.talker.get_text_embeddings().requires_grad_(False)  # 150k rows: slow to update, irrelevant to the shift
    objective = TalkerObjective(model)
    batch = layout.collate([layout.build(s, "streaming") for s in random_samples(model, count=2, seed=3)])
    optimizer = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(25):
        loss = objective(batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    objective.eval()
    with torch.no_grad():
        one_shift = objective(batch)["codebook0_loss"]
        _, logits = objective.talker_forward(batch)
        # What a script that shifts our labels once more computes (transformers' causal-LM loss does that).
        shifted = batch.labels[:, 1:]
        twice = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), shifted.reshape(-1), ignore_index=IGNORE)
    assert one_shift < 0.5 * twice, (one_shift, twice)


def test_every_sub_talker_head_and_the_text_path_get_gradient(setup):
    wrapper, layout = setup
    model = fresh_swedish_model(wrapper.source)
    objective = TalkerObjective(model)
    samples = random_samples(model, count=2, seed=4)
    objective(layout.collate([layout.build(s, "icl") for s in samples]))["loss"].backward()
    predictor = model.talker.code_predictor
    for head in range(15):
        assert predictor.lm_head[head].weight.grad.abs().sum() > 0, f"sub-talker head {head + 1} got no gradient"
    for group in range(14):  # codebooks 1..14 are fed to the predictor; codebook 15 never is (nor in inference)
        assert predictor.get_input_embeddings()[group].weight.grad.abs().sum() > 0
    assert model.talker.text_projection.linear_fc1.weight.grad.abs().sum() > 0
    assert model.talker.get_text_embeddings().weight.grad.abs().sum() > 0


def bad(sample: Sample, **changes) -> Sample:
    sample = copy.copy(sample)
    for name, value in changes.items():
        setattr(sample, name, value)
    return sample


def test_bad_input_names_the_sample_and_the_field(setup):
    wrapper, layout = setup
    good = random_samples(wrapper.model, count=1, seed=5)[0]
    hidden = wrapper.model.config.talker_config.hidden_size
    cases = [
        (bad(good, codes=torch.full((5, 16), 2048)), "codes", "0..2047"),
        (bad(good, codes=torch.zeros(5, 15, dtype=torch.long)), "codes", "shape"),
        (bad(good, codes=torch.zeros(0, 16, dtype=torch.long)), "codes", "shape"),
        (bad(good, text="   "), "text", "empty"),
        (bad(good, language="klingon"), "language", "unknown language"),
        (bad(good, xvector=torch.zeros(hidden + 1)), "xvector", "size"),
        (bad(good, xvector=torch.full((hidden,), float("nan"))), "xvector", "NaN"),
        (bad(good, ref_codes=None), "ref_codes", "ICL"),
    ]
    for sample, field, words in cases:
        with pytest.raises(ValueError) as info:
            layout.build(sample, "icl")
        message = str(info.value)
        assert repr(sample.key) in message and repr(field) in message and words in message, message

    short = copy.deepcopy(wrapper.model.config)
    short.talker_config.max_position_embeddings = 40
    with pytest.raises(ValueError, match=r"field 'text'.*exceeds the talker's limit of 40"):
        SequenceLayout(short, wrapper.processor.tokenizer).build(bad(good, text="Hej " * 30), "non_streaming")


def test_held_out_scores_are_means_per_frame_over_everything_scored():
    """Two batches of 30 and 10 frames with losses 1 and 3 average to 1.5 per frame (not 2, the mean of batch means);
    EOS accuracy is weighted by samples; tallies add up like one tally of every batch."""
    from qwen_swe.objective import ScoreTally

    def out(frames, loss, eos_accuracy):
        values = dict.fromkeys(ScoreTally.FRAME_WEIGHTED, loss)
        return {**{k: torch.tensor(v) for k, v in values.items()}, "eos_accuracy": torch.tensor(eos_accuracy),
                "frames": torch.tensor(float(frames))}

    first, second, both = ScoreTally(), ScoreTally(), ScoreTally()
    first.add(out(30, 1.0, 1.0), samples=3)
    second.add(out(10, 3.0, 0.0), samples=1)
    both.add(out(30, 1.0, 1.0), samples=3)
    both.add(out(10, 3.0, 0.0), samples=1)
    means = (first + second).means()
    assert means == both.means()
    assert means["loss"] == pytest.approx(1.5) and means["sub_talker_accuracy"] == pytest.approx(1.5)
    assert means["eos_accuracy"] == pytest.approx(0.75) and means["frames"] == 40 and means["samples"] == 4
    assert ScoreTally().means()["loss"] == 0.0 and ScoreTally().frames == 0


def gradients(objective: TalkerObjective) -> dict[str, torch.Tensor]:
    grads = {name: p.grad.detach().clone() for name, p in objective.named_parameters() if p.grad is not None}
    objective.zero_grad(set_to_none=True)
    return grads


def test_micro_batch_losses_weighted_by_the_steps_targets_add_up_to_the_whole_batchs_gradient(setup):
    """Split one batch into micro-batches of different sizes: with the step's target counts, their gradients add up
    to the gradient of the whole batch's mean loss (the plain mean of micro-batch means would not)."""
    from qwen_swe.objective import StepTargets, count_targets

    wrapper, layout = setup
    objective = TalkerObjective(fresh_swedish_model(wrapper.source), sub_talker_weight=0.3).double()
    samples = random_samples(wrapper.model, count=3, seed=7)
    whole = layout.collate([layout.build(s, "streaming") for s in samples])
    parts = [layout.collate([layout.build(s, "streaming") for s in group]) for group in (samples[:1], samples[1:])]
    assert count_targets(parts[0]) != count_targets(parts[1])  # unequal micro-batches: the case that matters
    objective(whole)["loss"].backward()
    expected = gradients(objective)
    targets = StepTargets(*map(sum, zip(*(count_targets(part) for part in parts))))
    assert targets == StepTargets(*count_targets(whole))
    for part in parts:
        objective(part, targets=targets)["loss"].backward()
    accumulated = gradients(objective)
    assert expected.keys() == accumulated.keys()
    for name in expected:
        torch.testing.assert_close(accumulated[name], expected[name], rtol=1e-6, atol=1e-9, msg=name)
    for part in parts:  # the mean of the micro-batches' own means weights them wrongly
        (objective(part)["loss"] / 2).backward()
    naive = gradients(objective)
    assert not torch.allclose(naive["model.talker.codec_head.weight"], expected["model.talker.codec_head.weight"],
                              rtol=1e-3)


def test_sub_talker_frame_sampling_is_seeded_uniform_and_leaves_codebook_0_alone(setup):
    from qwen_swe.objective import count_targets, frame_sampling_generator, sample_sub_talker_frames

    wrapper, layout = setup
    objective = TalkerObjective(wrapper.model).eval()
    batch = layout.collate([layout.build(s, "streaming") for s in random_samples(wrapper.model, count=4, seed=3)])
    frames = batch.sub_frames.numel()
    assert sample_sub_talker_frames(batch, 1.0, frame_sampling_generator(0, 1, 0, 0)) is batch
    drawn = sample_sub_talker_frames(batch, 0.25, frame_sampling_generator(0, 1, 0, 0))
    assert drawn.sub_frames.numel() == round(0.25 * frames)
    assert count_targets(drawn) == (count_targets(batch)[0], round(0.25 * frames) * 15)
    whole = set(zip(batch.sub_batch.tolist(), batch.sub_positions.tolist(), batch.sub_frames.tolist()))
    picked = list(zip(drawn.sub_batch.tolist(), drawn.sub_positions.tolist(), drawn.sub_frames.tolist()))
    assert set(picked) <= whole and len(set(picked)) == len(picked)  # without replacement, the same triples
    again = sample_sub_talker_frames(batch, 0.25, frame_sampling_generator(0, 1, 0, 0))
    assert torch.equal(again.sub_frames, drawn.sub_frames)  # same (seed, step, micro-batch, rank): same frames
    other = sample_sub_talker_frames(batch, 0.25, frame_sampling_generator(0, 2, 0, 0))
    assert not torch.equal(other.sub_frames, drawn.sub_frames)
    tiny = sample_sub_talker_frames(batch, 1e-6, frame_sampling_generator(0, 1, 0, 0))
    assert tiny.sub_frames.numel() == 1  # never zero frames
    with torch.no_grad():
        full, sampled = objective(batch), objective(drawn)
        assert torch.equal(sampled["codebook0_loss"], full["codebook0_loss"])
        # every frame equally likely: over many draws the sampled loss averages to the full one
        draws = [objective(sample_sub_talker_frames(batch, 0.25, frame_sampling_generator(9, step, 0, 0)))
                 ["sub_talker_loss"] for step in range(300)]
    assert float(torch.stack(draws).mean()) == pytest.approx(float(full["sub_talker_loss"]), rel=0.01)
