"""The gradient-flow recorder and the depth sweep."""

import math

import torch

from actattn.gradflow import GradientFlowRecorder, attention_stats, depth_sweep, token_similarity
from actattn.nn import DecoderLM


def test_recorder_matches_hand_computed_norms():
    torch.manual_seed(0)
    model = DecoderLM(vocab_size=13, dim=16, heads=2, layers=2, max_len=12, attention="relu").double()
    recorder = GradientFlowRecorder(model)
    # A second observer would be overwritten; wrap the recorder's to keep q of the first block by hand.
    seen = {}
    first = model.blocks[0].attn
    recorder_observer = first.observer

    def observer(module, q, k, v, out):
        q.retain_grad()
        seen["q"], seen["k"], seen["v"], seen["out"] = q, k, v, out
        recorder_observer(module, q, k, v, out)

    first.observer = observer
    tokens = torch.randint(0, 13, (3, 12))
    loss = torch.nn.functional.cross_entropy(model(tokens).flatten(0, 1), tokens.flatten())
    loss.backward()
    record = recorder.step(7)
    assert record["step"] == 7 and list(record["layers"]) == ["blocks.0.attn", "blocks.1.attn"]
    layer = record["layers"]["blocks.0.attn"]
    block_norm = math.sqrt(sum(p.grad.pow(2).sum().item() for p in model.blocks[0].parameters()))
    assert math.isclose(layer["param_grad_norm"], block_norm, rel_tol=1e-12)
    assert math.isclose(layer["q_grad_norm"], seen["q"].grad.norm().item(), rel_tol=1e-12)
    weights = torch.relu(seen["q"] @ seen["k"].transpose(-2, -1) / math.sqrt(8)) / 12
    visible = torch.ones(12, 12, dtype=torch.bool).tril()
    zeros = ((weights == 0) & visible).sum().item() / (visible.sum().item() * 3 * 2)
    assert math.isclose(layer["zero_fraction"], zeros, rel_tol=1e-12)


def test_stats_of_linear_kinds():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 1, 5, 3, dtype=torch.float64) for _ in range(3))
    stats = attention_stats("linear-elu", q, k, v)
    phi_k = torch.nn.functional.elu(k) + 1
    kv = (phi_k.transpose(-2, -1) @ v).norm().item()
    assert math.isclose(stats["state_norm"], kv, rel_tol=1e-12)
    assert 0 < stats["den_min"] <= stats["den_max"]


def test_recorder_can_be_switched_off():
    model = DecoderLM(vocab_size=5, dim=8, heads=2, layers=1, max_len=4)
    recorder = GradientFlowRecorder(model)
    recorder.enabled = False
    tokens = torch.randint(0, 5, (2, 4))
    model(tokens).sum().backward()
    assert "q_grad_norm" not in recorder.step(0)["layers"]["blocks.0.attn"]


def test_depth_sweep_covers_every_combination():
    results = depth_sweep(["softmax", "linear-relu"], depths=(2, 4), dim=16, heads=2, seq_len=8, batch=2)
    assert len(results) == 2 * 2 * 2
    assert {(r["kind"], r["residual"], r["depth"]) for r in results} == {
        (kind, residual, depth) for kind in ("softmax", "linear-relu") for residual in (True, False) for depth in (2, 4)
    }
    assert all(math.isfinite(r["first_over_last"]) and r["first_over_last"] > 0 for r in results)
    assert all(-1 <= r["token_similarity"] <= 1 for r in results)


def test_token_similarity_measures_rank_collapse():
    direction = torch.randn(16)
    collapsed = direction * torch.rand(2, 5, 1).add(0.5)  # every token a positive multiple of one vector
    assert math.isclose(token_similarity(collapsed), 1.0, rel_tol=1e-12)
    assert abs(token_similarity(torch.eye(8).unsqueeze(0))) < 1e-12  # orthogonal tokens
    opposite = torch.stack([direction, -direction]).unsqueeze(0)
    assert math.isclose(token_similarity(opposite), -1.0, rel_tol=1e-12)
    with_dead = torch.cat([collapsed, torch.zeros(2, 3, 16)], dim=1)  # zero tokens have no direction
    assert math.isclose(token_similarity(with_dead), 1.0, rel_tol=1e-12)
    assert math.isnan(token_similarity(torch.zeros(1, 4, 16)))


def test_recorder_records_the_attention_outputs_similarity():
    torch.manual_seed(0)
    model = DecoderLM(vocab_size=16, dim=16, heads=2, layers=2, attention="relu")
    recorder = GradientFlowRecorder(model)
    model(torch.randint(0, 16, (2, 8))).sum().backward()
    record = recorder.step(0)
    assert all(-1 <= layer["out_token_similarity"] <= 1 for layer in record["layers"].values())
