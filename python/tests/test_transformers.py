"""A whole model on attn_implementation="attn_cl" against its eager attention.

A randomly initialised small Llama-style model (grouped-query attention,
rotary embeddings), built from a config object: nothing is downloaded.
"""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import attn_cl.transformers  # noqa: E402,F401  (registers "attn_cl")


def small_llama(attn_implementation):
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128,
                                      num_hidden_layers=2, num_attention_heads=8,
                                      num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    model.config._attn_implementation = attn_implementation  # same weights, other attention
    return model.eval()


@pytest.fixture(scope="module")
def models():
    eager = small_llama("eager")
    ours = small_llama("attn_cl")
    ours.load_state_dict(eager.state_dict())
    return eager, ours


def test_logits_match_eager(context, models, monkeypatch):
    eager, ours = models
    calls = []
    library_call = attn_cl.transformers.attn_torch.attention

    def counted(*args, **kwargs):
        calls.append(kwargs)
        return library_call(*args, **kwargs)

    monkeypatch.setattr(attn_cl.transformers.attn_torch, "attention", counted)
    ids = torch.randint(0, 128, (2, 23), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = eager(ids).logits
        assert not calls
        actual = ours(ids).logits
    assert len(calls) == 2  # one per layer: the model ran on the library
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


def test_padded_batch_matches_eager(context, models):
    eager, ours = models
    ids = torch.randint(0, 128, (2, 15), generator=torch.Generator().manual_seed(2))
    attention_mask = torch.ones(2, 15, dtype=torch.long)
    attention_mask[1, 11:] = 0  # right padding: the padded positions' outputs are not compared
    with torch.no_grad():
        expected = eager(ids, attention_mask=attention_mask).logits
        actual = ours(ids, attention_mask=attention_mask).logits
    torch.testing.assert_close(actual[0], expected[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(actual[1, :11], expected[1, :11], atol=1e-4, rtol=1e-4)


def test_generation_with_kv_cache_matches_eager(context, models):
    eager, ours = models
    ids = torch.randint(0, 128, (1, 9), generator=torch.Generator().manual_seed(3))
    settings = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        expected = eager.generate(ids, **settings)
        actual = ours.generate(ids, **settings)
    assert torch.equal(actual, expected)
