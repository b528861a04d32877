"""Whether this CPU can train and generate in bf16: it claims to, and its bf16 kernels survive a probe.

A CPU with AVX512-BF16 or AMX runs bf16 matmuls natively through oneDNN (Gemma 3 270M: 24.5 vs 13 tokens/s
in fp32 here), so bf16 is the default where the CPU claims it. On one CI machine that claimed it, the first
bf16 training step killed the process with SIGFPE, which no ``try`` can catch: a native kernel (oneDNN's,
fp32 takes MKL's) divided by zero. So before a process first uses bf16 on a CPU, a child process runs the
kernels a training step and generation use (autocast linear layers forward and backward, frozen bf16
weights, attention, the output layer's ``out=`` matmul, bf16 inference); if it dies, bf16 is off with one
warning line. The verdict is kept per CPU model, flags and torch version, so the probe runs once a machine.
"""

from __future__ import annotations

import functools
import hashlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import platformdirs

from ftcot.errors import FtcotError
from ftcot.paths import atomic_write_json

# Shapes of Gemma 3 270M (hidden 640, MLP 2048, 4 heads of 256); a few hundred milliseconds of work.
PROBE = """
import torch
torch.manual_seed(0)
x = torch.randn(4, 96, 640, requires_grad=True)
full = torch.nn.Linear(640, 2048)
frozen = torch.nn.Linear(2048, 1024).to(torch.bfloat16).requires_grad_(False)
with torch.autocast("cpu", dtype=torch.bfloat16):
    q = frozen(torch.relu(full(x))).view(4, 96, 4, 256).transpose(1, 2)
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
    eager = torch.softmax(q @ q.transpose(-1, -2), dim=-1) @ q
    loss = sdpa.float().square().mean() + eager.float().square().mean()
loss.backward()
out = torch.empty(384, 4096, dtype=torch.bfloat16)
torch.matmul(x.detach().view(-1, 640).bfloat16(), torch.randn(640, 4096, dtype=torch.bfloat16), out=out)
with torch.no_grad():
    frozen(torch.randn(1, 7, 2048, dtype=torch.bfloat16))
assert torch.isfinite(x.grad).all()
print("ok")
"""


def _cache_path() -> Path:
    return Path(platformdirs.user_cache_dir("ftcot")) / "cpu-bf16.json"


def _machine_key() -> str:
    """The CPU model and flags and the torch version: what decides which kernels run."""
    import torch

    try:
        lines = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
        cpu = [line for line in lines if line.startswith(("model name", "flags"))][:2]
    except OSError:
        import platform

        cpu = [platform.processor(), platform.machine()]
    return hashlib.sha256("\n".join([torch.__version__, *cpu]).encode()).hexdigest()[:16]


def probe(code: str = PROBE, timeout: float = 300) -> str | None:
    """Run ``code`` in a child Python; None if it printed "ok", else why not (the signal that killed it)."""
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"no answer in {timeout:.0f} s"
    if done.returncode == 0 and done.stdout.strip().endswith("ok"):
        return None
    if done.returncode < 0:
        try:
            return f"killed by {signal.Signals(-done.returncode).name}"
        except ValueError:
            return f"killed by signal {-done.returncode}"
    last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
    return f"failed: {last[:200]}"


@functools.cache
def cpu_bf16_works() -> bool:
    """True where the CPU claims native bf16 and the probe survives (asked once a machine, then cached)."""
    import torch

    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False  # emulated bf16 is slower than fp32: not worth a probe
    key, path = _machine_key(), _cache_path()
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    if isinstance(known.get(key), bool):
        return known[key]
    problem = probe()
    if problem is not None:
        print(f"ftcot: this CPU claims bf16, but a bf16 probe {problem}; training and generating in fp32 "
              f"(--bf16 / --dtype bfloat16 force bf16).", file=sys.stderr)
    try:
        atomic_write_json(path, {**known, key: problem is None})
    except (OSError, FtcotError):
        pass  # an unwritable cache only means probing again next time
    return problem is None
