"""How close two engines' latents must be to count as the same computation."""
from __future__ import annotations

import torch

# float32 kernels differ between CPUs (oneDNN takes AVX-512, AMX or AVX2 paths and orders its sums
# differently), so two engines doing the same work agree to rounding relative to the tensor's scale,
# not element by element: latents of magnitude 170 differed by 3e-4 (2e-6 of the scale) on an AMD EPYC
# where an Intel Xeon gave 1e-5. A real difference in the work (a wrong sigma, a missed CFG term) moves
# them by percents.
SCALE_RTOL = 1e-5


def assert_same_up_to_rounding(ours: torch.Tensor, theirs: torch.Tensor, rtol: float = SCALE_RTOL) -> None:
    """The largest difference is at most `rtol` of the largest magnitude in `theirs`."""
    ours, theirs = ours.float().cpu(), theirs.float().cpu()
    assert ours.shape == theirs.shape, f"shapes differ: {tuple(ours.shape)} and {tuple(theirs.shape)}"
    diff, scale = (ours - theirs).abs().max().item(), theirs.abs().max().item()
    assert diff <= rtol * scale, f"largest difference {diff:.3g} is more than {rtol:g} of the scale {scale:.3g}"
