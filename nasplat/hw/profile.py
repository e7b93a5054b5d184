"""Hardware profiles: the schema of ``hw_profiles/*.yaml`` and the experiment's
``profile:`` section.

A profile fixes everything that changes a latency number: the device, the ONNX
Runtime execution provider, precision (fp32 / int8), batch size, threads, graph
optimisation level, CPU affinity and the timing protocol, plus where the device is
(``where: local`` in this process, ``where: ray`` on the Ray node that has the custom
resource ``ray_resource``, or ``where: bundle`` for an offline device that runs
``nasplat device-run``). See ``hw_profiles/README.md``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import UserError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Protocol(_Strict):
    """How a model is timed. hw_profiles/README.md: warm-up >= 10 runs or >= 0.5 s, >= 50 timed runs,
    median, raw samples kept. The experiment's ``profile.protocol`` may lower the counts
    (e.g. for a quick demo); the shipped profiles keep the full protocol."""

    warmup_runs: int = Field(10, ge=0)
    warmup_seconds: float = Field(0.5, ge=0.0, le=60.0)
    timed_runs: int = Field(50, ge=1, le=100_000)
    statistic: Literal["median", "mean", "min"] = "median"
    seed: int = 0


class Quantization(_Strict):
    """Static INT8 quantisation (``onnxruntime.quantization.quantize_static``), calibrated
    on real training images of the experiment's data set."""

    calib_images: int = Field(64, ge=1, le=10_000)
    format: Literal["qdq", "qoperator"] = "qdq"
    per_channel: bool = True
    activation_type: Literal["uint8", "int8"] = "uint8"
    weight_type: Literal["int8", "uint8"] = "int8"
    method: Literal["minmax", "entropy", "percentile"] = "minmax"


class HardwareProfile(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.@-]+$")
    description: str = ""
    device: str = "cpu"  # free text: what the hardware is (e.g. "Raspberry Pi 4, Cortex-A72")
    runtime: str | None = None  # expected onnxruntime version prefix, e.g. "1.32"; recorded per row anyway
    provider: str = "CPUExecutionProvider"
    precision: Literal["fp32", "int8"] = "fp32"
    batch_size: int = Field(1, ge=1, le=4096)
    intra_op_threads: int = Field(1, ge=0, le=1024)  # 0 = ONNX Runtime's default
    inter_op_threads: int = Field(1, ge=0, le=1024)
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    affinity: list[int] | None = None  # CPU ids the measuring process is pinned to
    protocol: Protocol = Protocol()
    quantization: Quantization = Quantization()
    where: Literal["local", "ray", "bundle"] = "local"
    ray_resource: str | None = None  # e.g. "device:rpi4"; required with where: ray
    opset: int = Field(18, ge=13, le=23)

    @model_validator(mode="after")
    def _where(self) -> "HardwareProfile":
        if self.where == "ray" and not self.ray_resource:
            raise ValueError("where: ray needs ray_resource (a custom Ray node resource such as device:rpi4)")
        if self.ray_resource and self.where != "ray":
            raise ValueError(f"ray_resource is only used with where: ray (where is {self.where!r})")
        if self.affinity is not None and (not self.affinity or min(self.affinity) < 0):
            raise ValueError("affinity must be a non-empty list of CPU ids >= 0")
        return self

    def settings(self, protocol: Protocol | None = None) -> dict[str, Any]:
        """The plain-JSON settings the torch-free runner reads."""
        return {"profile": self.name, "provider": self.provider, "precision": self.precision,
                "batch_size": self.batch_size, "intra_op_threads": self.intra_op_threads,
                "inter_op_threads": self.inter_op_threads, "graph_optimization": self.graph_optimization,
                "affinity": self.affinity, "protocol": (protocol or self.protocol).model_dump()}


class ProtocolOverride(_Strict):
    warmup_runs: int | None = Field(None, ge=0)
    warmup_seconds: float | None = Field(None, ge=0.0, le=60.0)
    timed_runs: int | None = Field(None, ge=1, le=100_000)


class ProfileStageConfig(_Strict):
    """The experiment's ``profile:`` section (the ``nasplat profile`` stage)."""

    samples: int = Field(50, ge=2, le=100_000)  # archs per device, stratified over MACs
    chunk: int = Field(8, ge=1, le=1000)  # archs exported, measured and appended per step
    protocol: ProtocolOverride = ProtocolOverride()  # lower counts for a quick run

    def protocol_for(self, profile: HardwareProfile) -> Protocol:
        changes = {k: v for k, v in self.protocol.model_dump().items() if v is not None}
        return profile.protocol.model_copy(update=changes)


def _shipped_dir() -> Path:
    from ..paths import SHIPPED_PROFILES

    return SHIPPED_PROFILES


def shipped_profiles() -> list[str]:
    return sorted(p.stem for p in _shipped_dir().glob("*.yaml"))


def load_profile(spec: str | Path, base_dir: Path | None = None, source: str | Path | None = None,
                 field: str | None = None) -> HardwareProfile:
    """A profile by shipped name (``local-cpu`` -> ``hw_profiles/local-cpu.yaml``) or by
    path (relative to ``base_dir``). ``name`` defaults to the file's stem."""
    from ..space import read_yaml, validate

    p = Path(spec)
    candidates = []
    if p.suffix in (".yaml", ".yml") or len(p.parts) > 1:
        candidates.append(p if p.is_absolute() or base_dir is None else base_dir / p)
        candidates.append(p)
    if not p.suffix and len(p.parts) == 1:
        candidates.append(_shipped_dir() / f"{spec}.yaml")
    for c in candidates:
        if c.is_file():
            data = read_yaml(c, "hardware profile")
            data.setdefault("name", c.stem)
            return validate(HardwareProfile, data, c)
    known = ", ".join(shipped_profiles())
    raise UserError(f"hardware profile {str(spec)!r} not found (shipped: {known})", source, field)
