"""Training settings: one dataclass, each field with its help text (the CLI reads it from here).

Defaults are the paper's: AdamW, lr 3e-4, batch 8, no scheduler, no
warm-up, 512-token limits. The paper trains 20 epochs in fp32; ``bf16`` defaults
to "where the hardware has it", which is what makes a 270M student practical on a CPU.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ftcot.errors import FtcotError, check_float, check_int


def _help(text: str, flag: str | None = None, **kwargs: Any) -> Any:
    """A field with its help text (and its command-line spelling, where it is not ``--name``)."""
    return field(metadata={"help": text, **({"flag": flag} if flag else {})}, **kwargs)


@dataclass(frozen=True)
class TrainConfig:
    student: str = _help("Student model: tiny-gpt2, tiny-t5, gemma-270m, smollm2-135m, or a local model directory.",
                         default="gemma-270m")
    lora: bool = _help("Train LoRA adapters on all linear projections instead of every weight.", "--lora/--full",
                       default=False)
    lora_r: int = _help("LoRA rank.", default=16)
    lora_alpha: int = _help("LoRA alpha (the update is scaled by alpha / r).", default=32)
    lora_dropout: float = _help("Dropout on the LoRA input (default 0, peft's: Gemma 270M LoRA on coin_flip, 3 "
                                "epochs, reached val loss 0.195 without it and 0.193 with 0.05, while its masks "
                                "took ~20% of a CPU training step).", default=0.0)
    dropout: float | None = _help("Set every dropout probability of the student (default: the model's own).",
                                  default=None)
    epochs: int = _help("Passes over the training set.", default=20)
    lr: float = _help("AdamW learning rate (constant: no scheduler, no warm-up).", default=3e-4)
    weight_decay: float = _help("AdamW weight decay (torch's default, as the reference).", default=0.01)
    batch_size: int = _help("Examples per step across all processes (split evenly between them).", default=8)
    grad_accum: int = _help("Steps whose gradients are summed before each optimizer update.", default=1)
    bf16: bool | None = _help("bf16 compute (default: where the hardware supports it).", "--bf16/--no-bf16",
                              default=None)
    max_length: int = _help("Token limit of each side, prompt and completion (the paper: 512 and 512).",
                            default=512)
    allow_truncation: bool = _help("Cut over-long targets to --max-length instead of failing.", default=False)
    select_epoch: str = _help(
        "Which epoch becomes best/: best (highest validation accuracy, then lowest validation loss, then the "
        "earliest) or last (the final epoch, validation only recorded; better over long trainings of a student "
        "still improving: results/epoch_selection/README.md).", default="best")
    seed: int = _help("Seed of the data order, dropout and tiny models' initialisation.", default=0)
    eval_batch_size: int = _help("Batch size of validation generation.", default=16)
    max_new_tokens: int | None = _help("Generation limit at validation (default: longest target + 25%).",
                                       default=None)
    pad_multiple: int | None = _help("Round padded batch lengths up to a multiple of this (default: 64 on GPUs, "
                                     "where every new shape costs kernel planning; 1 on CPUs).", default=None)
    loss_chunk: int | None = _help("Completion positions per output-layer chunk in the loss "
                                   "(default: 32M logits / vocabulary size; 128 for Gemma).", default=None)
    device: str = _help("auto, cpu, cuda or cuda:N (under accelerate launch: its device).", default="auto")
    rationale_weight: float | None = _help(
        "Distilling step-by-step (ft_dss data only): λ, the rationale task's loss weight against the label "
        "task's; the loss is (label loss + λ · rationale loss) / (1 + λ), each a mean over its target tokens "
        "(default 1, the paper's).", default=None)
    kd_weight: float | None = _help(
        "Logit distillation (a DATA_DIR curated from a teacher with top_logprobs): λ; the loss is cross-entropy + λ · "
        "KL(teacher ‖ student) over the teacher's top-K tokens at each completion token they cover, both summed "
        "over the completion tokens and divided by their count. Needs the teacher's tokenizer (default: off).",
        default=None)

    def __post_init__(self) -> None:
        # Checked here, at the edge (CLI options, `ftcot run` YAML, Python calls alike): a NaN learning rate
        # or a dropout of 2 would otherwise train for an epoch and save garbage as the best model.
        for name in _POSITIVE_INTS:
            check_int(_flag(name), getattr(self, name), 1, optional=name in _OPTIONAL)
        check_int("--seed", self.seed, 0, MAX_SEED)
        check_float("--lr", self.lr, 0, low_open=True)
        check_float("--weight-decay", self.weight_decay, 0)
        check_float("--lora-dropout", self.lora_dropout, 0, 1, high_open=True)
        check_float("--dropout", self.dropout, 0, 1, high_open=True, optional=True)
        check_float("--rationale-weight", self.rationale_weight, 0, optional=True)
        check_float("--kd-weight", self.kd_weight, 0, optional=True)
        if self.select_epoch not in SELECT_EPOCH:
            raise FtcotError(f"--select-epoch must be one of {', '.join(SELECT_EPOCH)} (got {self.select_epoch!r}).")
        for name in ("lora", "allow_truncation"):
            if not isinstance(getattr(self, name), bool):
                raise FtcotError(f"{_flag(name)} must be true or false (got {getattr(self, name)!r}).")
        if self.bf16 is not None and not isinstance(self.bf16, bool):
            raise FtcotError(f"--bf16 must be true, false or unset (got {self.bf16!r}).")
        if not isinstance(self.student, str) or not self.student:
            raise FtcotError(f"--student must be a non-empty name (got {self.student!r}).")
        # The trainer hands the device to accelerate, which would ignore a name it does not know.
        if not isinstance(self.device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise FtcotError(f"Unknown device {self.device!r}. Use auto, cpu, cuda or cuda:N.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # Fields that may change between a run and its resumption without changing the result.
    RESUMABLE_CHANGES = ("epochs", "eval_batch_size", "device")




_POSITIVE_INTS = ("epochs", "batch_size", "grad_accum", "max_length", "lora_r", "lora_alpha", "eval_batch_size",
                  "max_new_tokens", "loss_chunk", "pad_multiple")
_OPTIONAL = ("max_new_tokens", "loss_chunk", "pad_multiple")
SELECT_EPOCH = ("best", "last")
MAX_SEED = 2**32 - 1  # numpy's and most libraries' seed range


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"
