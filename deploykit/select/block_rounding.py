"""Widths a backend runs in its channel blocks: multiples of the block, or of a finer step below it.

ONNX Runtime's x86 CPU kernels run a convolution in the blocked NCHWc layout only when its
input channels are a multiple of the block (16 with AVX-512, 8 with AVX2) or fewer than one
block (its ``NchwcTransformer``); any other width sends the layer to the plain NCHW path with
layout conversions around it. Rounding to the block everywhere keeps the kernels blocked but
leaves a 16-wide group nothing to give; ``--round-to 16:8`` allows multiples of 16, and
multiples of 8 below 16. Measured on ONNX Runtime with AVX-512 it does not beat 16 (an 8-wide
layer inside a network leaves the blocked kernels too) nor 8 on ResNet-20's accuracy: README.
"""

from __future__ import annotations

from dataclasses import dataclass

from deploykit.errors import DeployKitError

# What --round-to accepts, for every message that rejects a value.
ROUND_TO_CHOICES = "a positive integer, BLOCK:STEP (e.g. 16:8) or auto"


@dataclass(frozen=True)
class BlockRounding:
    """Multiples of ``block``, and multiples of ``step`` below ``block``."""

    block: int
    step: int

    @classmethod
    def parse(cls, text: str) -> BlockRounding:
        """``"16:8"`` → ``BlockRounding(16, 8)``.

        Raises:
            DeployKitError: not two positive integers with the second dividing the first.
        """
        try:
            block, step = (int(p) for p in text.split(":"))
        except ValueError:
            raise DeployKitError(f"--round-to {text!r}: give {ROUND_TO_CHOICES}") from None
        if step < 1 or block <= step or block % step:
            raise DeployKitError(f"--round-to {text!r}: BLOCK:STEP needs 0 < STEP < BLOCK with STEP dividing BLOCK "
                                 "(e.g. 16:8)")
        return cls(block, step)

    def __str__(self) -> str:
        return f"{self.block}:{self.step}"

    def widths(self, full: int) -> list[int]:
        """The widths a group of ``full`` channels may keep (its full width always)."""
        return sorted({w for w in range(self.step, full, self.step) if w % self.block == 0 or w < self.block} | {full})
