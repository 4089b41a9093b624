"""Samplers, one algorithm per module, all on the step-wise protocol of ``base``."""

from .base import Denoiser, HistoryValue, Sampler, SamplerState, StepCallback, ancestral_step, to_d
from .ddpm import DDPM
from .dpm_2 import DPM2
from .dpm_2_ancestral import DPM2Ancestral
from .dpmpp_2m import DPMPP2M
from .dpmpp_2m_sde import DPMPP2MSDE, DPMPP2MSDEGPU, DPMPP2MSDEHeun, DPMPP2MSDEHeunGPU
from .dpmpp_2s_ancestral import DPMPP2SAncestral
from .dpmpp_3m_sde import DPMPP3MSDE, DPMPP3MSDEGPU
from .dpmpp_sde import DPMPPSDE, DPMPPSDEGPU
from .euler import DDIM, Euler
from .euler_ancestral import EulerAncestral
from .heun import Heun
from .lcm import LCM
from .lms import LMS
from .uni_pc import UniPC, UniPCBH2

__all__ = [
    "DDIM", "DDPM", "DPM2", "DPM2Ancestral", "DPMPP2M", "DPMPP2MSDE", "DPMPP2MSDEGPU", "DPMPP2MSDEHeun",
    "DPMPP2MSDEHeunGPU", "DPMPP2SAncestral", "DPMPP3MSDE", "DPMPP3MSDEGPU", "DPMPPSDE", "DPMPPSDEGPU", "Denoiser",
    "Euler", "EulerAncestral", "Heun", "HistoryValue", "LCM", "LMS", "Sampler", "SamplerState", "StepCallback",
    "UniPC", "UniPCBH2", "ancestral_step", "to_d",
]
