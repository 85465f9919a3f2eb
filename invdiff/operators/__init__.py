"""Forward operators: deepinv ``LinearPhysics`` with exact adjoints and useful pseudo-inverses."""

from invdiff.operators.blur import Blur
from invdiff.operators.coils import coil_map_error, estimate_coil_maps
from invdiff.operators.ct import CT
from invdiff.operators.ct3d import CT3D
from invdiff.operators.inpainting import Inpainting
from invdiff.operators.mri import MRI
from invdiff.operators.superres import SuperResolution

__all__ = ["Inpainting", "Blur", "SuperResolution", "CT", "CT3D", "MRI", "estimate_coil_maps", "coil_map_error"]
