"""The paper's reported figures (Liu et al. 2024, Tables 4-7), written out once for every study to set beside.

Real WGM2012 data, 2048 px tiles, 600 epochs on GPUs; nothing here is measured by ggmnet.
"""

from __future__ import annotations

#: Table 4's MRFEM depths.
DEPTHS = (16, 18, 20, 22, 24)
#: Table 4: depth -> (parameters in M, MPA %, FWIoU %).
TABLE4 = {16: (4.7, 50.9, 36.8), 18: (6.5, 55.3, 38.33), 20: (8.6, 59.8, 40.31), 22: (10.3, 63.1, 42.88),
          24: (12.4, 61.5, 41.12)}
#: Table 5's ablation rows: row -> (MPA %, FWIoU %).
TABLE5 = {"a": (48.38, 32.3), "b": (52.5, 36.5), "c": (56.2, 38.1), "d": (60.4, 40.3), "ours": (63.1, 42.88)}
#: Table 6: network -> (parameters in M, MPA %, FWIoU %).
TABLE6 = {"fc_hardnet70": (4.1, 46.1, 30.1), "fasterseg": (4.7, 51.56, 37.8), "hrnet_w32": (28.5, 57.1, 39.9),
          "ggmnet": (10.3, 63.1, 42.88)}
#: Table 6's names of the networks.
TABLE6_NAMES = {"fc_hardnet70": "FC-HarDNet-70", "fasterseg": "FasterSeg", "hrnet_w32": "HRNetV1-W32",
                "ggmnet": "GGMNet"}
#: Table 7: IoU % and accuracy % per class (None for the class the paper does not list).
TABLE7_IOU = (None, 22.8, 28.2, 20.3, 22.4, 50.3, 61.1, 15.3, 15.9, 40.4)
TABLE7_ACC = (None, 55.8, 62.5, 51.4, 53.6, 82.7, 90.2, 46.8, 48.6, 76.3)


def parameters_m(depth: int) -> float | None:
    """Table 4's parameter count (M) of GGMNet at ``depth``; None for a depth the paper did not train."""
    row = TABLE4.get(depth)
    return None if row is None else row[0]
