"""The ``export:`` section of an experiment."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ExportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    arch: str | dict[str, Any] = "max"  # "max", "min", or an arch mapping (`nasplat export` without --arch)
    opset: int = Field(18, ge=13, le=23)
    dynamo: bool = False  # exporter tried first; the other is the fallback
    calib_images: int | None = Field(None, ge=1)  # BN recalibration images (default: data.calib_images)
    recalibrate: bool = True  # False: keep the checkpoint's BN statistics (e.g. an OFA checkpoint)
    dynamic_batch: bool = True  # a symbolic batch axis; batch 1 and 32 are verified against torch
    precisions: list[Literal["fp32", "fp16", "int8"]] = ["fp32"]  # one ONNX file per precision
    latency_profile: str | None = "local-cpu"  # measure each file on this hardware profile (None: skip)
    check: bool = False  # re-evaluate every written file in ONNX Runtime from raw val images

    @field_validator("precisions")
    @classmethod
    def _fp32_first(cls, v: list[str]) -> list[str]:
        if "fp32" not in v:
            raise ValueError("fp32 is always exported (the others are derived from it): add fp32")
        return ["fp32"] + sorted(set(v) - {"fp32"})
