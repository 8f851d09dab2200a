"""actattn inside models that call attention themselves: routed_sdpa and Hugging Face transformers."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import actattn
from conftest import random_qkv


class CallsSdpa(nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def test_routed_sdpa_runs_the_chosen_activation_and_restores_torchs():
    q, k, v = random_qkv((1, 2, 9, 9, 8, 8))
    original = F.scaled_dot_product_attention
    with actattn.routed_sdpa("sigmoid"):
        routed = CallsSdpa()(q, k, v)
        with pytest.raises(NotImplementedError, match="attn_mask"):
            F.scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(9, 9, dtype=torch.bool))
    assert F.scaled_dot_product_attention is original
    torch.testing.assert_close(routed, actattn.attention(q, k, v, activation="sigmoid", causal=True))
    torch.testing.assert_close(CallsSdpa()(q, k, v), actattn.attention(q, k, v, causal=True))


transformers = pytest.importorskip("transformers")


def tiny_llama(attn_implementation, state=None, attention_dropout=0.0):
    """Two layers, 4 query heads on 2 key/value heads (grouped-query attention), built from a config."""
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, attention_dropout=attention_dropout,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    if state is not None:
        model.load_state_dict(state)
    return model.eval()


def decoded_logits(model, ids, new_tokens=3):
    """Logits of the last new_tokens positions, decoded one token at a time against the model's key/value
    cache after a prefill of the rest."""
    with torch.no_grad():
        out = model(ids[:, :-new_tokens], use_cache=True)
        cache, steps = out.past_key_values, []
        for t in range(ids.shape[1] - new_tokens, ids.shape[1]):
            out = model(ids[:, t : t + 1], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            steps.append(out.logits)
    return torch.cat(steps, dim=1)


def test_transformers_model_runs_actattn_softmax_as_its_own_sdpa():
    names = actattn.register_with_transformers()
    assert names == ("actattn_softmax", "actattn_sigmoid", "actattn_relu")
    reference = tiny_llama("sdpa")
    ours = tiny_llama("actattn_softmax", reference.state_dict())
    ids = torch.randint(0, 64, (2, 11), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ours(ids).logits, reference(ids).logits, rtol=1e-4, atol=1e-5)
    # Decoding with a key/value cache: each new token's query against the cache (bottom-right).
    torch.testing.assert_close(decoded_logits(ours, ids), decoded_logits(reference, ids), rtol=1e-4, atol=1e-5)
    assert ours.generate(ids, max_new_tokens=4, do_sample=False).shape == (2, 15)


def test_transformers_attention_dropout_applies_in_training_only():
    actattn.register_with_transformers()
    model = tiny_llama("actattn_relu", attention_dropout=0.3)
    ids = torch.randint(0, 64, (2, 11), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        evaluated = model(ids).logits
        torch.testing.assert_close(model(ids).logits, evaluated, rtol=0, atol=0)
        model.train()
        assert not torch.allclose(model(ids).logits, evaluated)


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_transformers_model_trains_and_decodes_with_another_activation(activation):
    actattn.register_with_transformers(key_count=64)  # the same bias / divisor in every call
    model = tiny_llama(f"actattn_{activation}").train()
    ids = torch.randint(0, 64, (2, 11), generator=torch.Generator().manual_seed(1))
    loss = model(ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    # Decoding against the cache equals the full causal run at the last position of each step.
    with torch.no_grad():
        full = torch.stack([model(ids[:, : t + 1]).logits[:, -1] for t in range(8, 11)], dim=1)
    torch.testing.assert_close(decoded_logits(model, ids), full, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("activation", ["softmax", "relu"])
def test_transformers_right_padded_batch_equals_each_sequence_alone(activation):
    actattn.register_with_transformers()
    model = tiny_llama(f"actattn_{activation}")
    ids = torch.randint(0, 64, (3, 9), generator=torch.Generator().manual_seed(5))
    lengths = [9, 6, 2]
    mask = (torch.arange(9) < torch.tensor(lengths).view(-1, 1)).long()
    with torch.no_grad():
        padded = model(ids, attention_mask=mask).logits
        for row, n in enumerate(lengths):
            # The mask became key lengths: relu's divisor is each sequence's own key count, as alone.
            torch.testing.assert_close(padded[row, :n], model(ids[row : row + 1, :n]).logits[0], rtol=1e-4, atol=1e-5)
    if activation == "softmax":  # and torch's SDPA on the same padded batch, padding rows included
        reference = tiny_llama("sdpa", model.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(padded, reference(ids, attention_mask=mask).logits, rtol=1e-4, atol=1e-5)


def test_transformers_left_padding_raises_naming_it():
    actattn.register_with_transformers()
    model = tiny_llama("actattn_relu")
    ids = torch.randint(0, 64, (2, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    # Padding must not be silently ignored.
    with pytest.raises(NotImplementedError, match="left-padded batch"):
        model(ids, attention_mask=mask)


def test_transformers_sliding_window_model_matches_its_sdpa_run():
    actattn.register_with_transformers()
    config = transformers.MistralConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, sliding_window=4,
    )
    models = []
    for implementation in ("sdpa", "actattn_softmax"):
        torch.manual_seed(0)
        models.append(transformers.AutoModelForCausalLM.from_config(config, attn_implementation=implementation).eval())
    reference, ours = models
    ids = torch.randint(0, 64, (2, 11), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, reference(ids).logits, rtol=1e-4, atol=1e-5)
        # The window must matter here, or the test could not fail.
        unwindowed = transformers.AutoModelForCausalLM.from_config(
            transformers.MistralConfig(**{**config.to_dict(), "sliding_window": None}), attn_implementation="sdpa")
        unwindowed.load_state_dict(reference.state_dict())
        assert not torch.allclose(unwindowed.eval()(ids).logits, reference(ids).logits, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(decoded_logits(ours, ids), decoded_logits(reference, ids), rtol=1e-4, atol=1e-5)
