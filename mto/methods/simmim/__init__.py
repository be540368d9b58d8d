"""SimMIM (Xie et al., CVPR 2022): mask tokens in the encoder, block masking, a linear pixel head."""

from mto.methods.registry import Method, register
from mto.methods.shared import BlockMaskSettings

register(
    Method(
        "simmim",
        "mto.methods.simmim.model:SimMIM",
        mto_on="encoder",
        masking="block",
        fusable=True,
        summary="SimMIM (Xie et al., CVPR 2022)",
        settings=(BlockMaskSettings,),
    )
)
