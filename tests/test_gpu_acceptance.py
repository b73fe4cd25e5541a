"""The CPU part of the GPU acceptance script (``benchmarks/gpu_acceptance.py --cpu-only``) passes every check."""

from __future__ import annotations

from benchmarks.gpu_acceptance import main

CPU_CHECKS = {
    "fp32 params are fp32",
    "bf16 params are bf16",
    "bf16 loss near fp32",
    "eager agrees with sdpa",
    "checkpointing keeps the loss",
    "checkpointing lowers saved activations",
}
"""Every check the CPU part runs."""


def test_cpu_part_passes_every_check(capsys):
    status = main(["--cpu-only"])
    lines = capsys.readouterr().out.splitlines()
    verdicts = {
        line.split(":")[0].split(" ", 1)[1]: line.split(" ", 1)[0]
        for line in lines
        if line.startswith(("PASS", "FAIL"))
    }
    assert set(verdicts) == CPU_CHECKS, lines
    assert all(verdict == "PASS" for verdict in verdicts.values()), [line for line in lines if line.startswith("FAIL")]
    assert status == 0
