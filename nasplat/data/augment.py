"""Training augmentation presets (the ``data.augment`` field), for the train split only.

Config syntax (a preset name, or a mapping with ``preset`` and options)::

    data:
      augment: ofa                              # shorthand for {preset: ofa}
      augment: {preset: darts, cutout: 16}      # DARTS retraining
      augment: {preset: ofa, flip: false, scale: [0.35, 1.0]}
      augment: rand-m9-mstd0.5                  # any timm auto-augment string

Presets:

* ``none`` (default): no augmentation.
* ``ofa``: OFA's ImageNet loader (``build_train_transform`` with ``distort_color='tf'``,
  ``resize_scale=0.08``): RandomResizedCrop (area ``scale``, aspect 3/4..4/3) +
  horizontal flip + ColorJitter(brightness=32/255, saturation=0.5), then normalise.
* ``darts``: the DARTS / PC-DARTS CIFAR loader: RandomCrop with ``padding`` (4) zero
  pixels + horizontal flip, then normalise, then Cutout of ``cutout`` pixels when > 0
  (the official code uses cutout 16 in retraining only, not in the search).
* a timm auto-augment string (``rand-m9-mstd0.5``, ``augmix-m5-w4-d2``,
  ``original``, ``v0``, ...): timm's training pipeline: RandomResizedCrop + flip +
  the auto-augment policy (timm disables colour jitter under auto-augment).

Options: ``flip`` (default true; set false where a mirror image is another class, e.g.
digits), ``scale`` (RandomResizedCrop area range, ``ofa`` and auto-augment),
``padding`` (``darts``), ``cutout`` (pixels, any preset; applied in normalised
space after normalisation, zeros, as the DARTS code does).

Where it runs: in-memory data sets (digits, cifar10) augment whole batches on the
batch's device (:class:`BatchAugment`: one ``affine_grid``/``grid_sample`` call for
crop + flip, vectorised colour jitter and cutout, per-sample random parameters drawn
on the CPU from torch's global generator, which the training checkpoint saves); folder data sets
build the same pipeline with timm's ``create_transform`` (torchvision ops for
``darts``) in the DataLoader workers. Only the training engine asks for augmented
batches (``DataBundle.batches(..., augment=True)``); BN recalibration, validation,
calibration and predictor sampling always see un-augmented images.

Deviations (documented, small): the in-memory RandomResizedCrop draws the crop box
once and clamps it to the image instead of torchvision's 10 rejection-sampling tries
(with a centre-crop fallback); colour jitter is applied in a fixed order (brightness,
then saturation) rather than torchvision's random order; the auto-augment presets
apply timm's policy per image (PIL) on the CPU, the rest of the pipeline batched.
The crop is made at the stored resolution; strategies then resize each batch to the
subnet's resolution (OFA crops straight to the batch's resolution).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PRESETS = ("none", "ofa", "darts")
AUTO_AUGMENT_PREFIXES = ("rand", "augmix", "original", "v0", "3a")
OFA_JITTER = (32.0 / 255.0, 0.0, 0.5)  # brightness, contrast, saturation (OFA 'tf' colour distortion)
RATIO = (3.0 / 4.0, 4.0 / 3.0)


class AugmentConfig(BaseModel):
    """The ``data.augment`` field; a bare string is the preset name."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    preset: str = "none"
    flip: bool = True
    scale: tuple[float, float] = (0.08, 1.0)
    padding: int = Field(4, ge=0)
    cutout: int = Field(0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"preset": v} if isinstance(v, str) else v

    @field_validator("preset")
    @classmethod
    def _preset(cls, v: str) -> str:
        if v in PRESETS:
            return v
        if not v.startswith(AUTO_AUGMENT_PREFIXES):
            raise ValueError(f"unknown augmentation {v!r} (expected one of {', '.join(PRESETS)} or a timm "
                             "auto-augment string such as rand-m9-mstd0.5)")
        try:  # timm parses the string; a typo fails at load time, not mid-training
            _auto_augment(v, 32, (0.5,))
        except Exception as e:  # noqa: BLE001 - timm raises assorted types for bad strings
            raise ValueError(f"not a timm auto-augment string: {v!r} ({e})") from None
        return v

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1] <= 1:
            raise ValueError("scale must be [min, max] with 0 < min <= max <= 1")
        return v

    @property
    def enabled(self) -> bool:
        return self.preset != "none" or self.cutout > 0

    @property
    def auto_augment(self) -> str | None:
        return self.preset if self.preset not in PRESETS else None

    @property
    def random_resized_crop(self) -> bool:
        return self.preset == "ofa" or self.auto_augment is not None


def _auto_augment(spec: str, resolution: int, mean: tuple[float, ...]) -> Any:
    """timm's auto-augment transform (PIL in, PIL out), as ``create_transform`` builds it."""
    from timm.data.auto_augment import augment_and_mix_transform, auto_augment_transform, rand_augment_transform

    hp: dict[str, Any] = {"translate_const": int(resolution * 0.45),
                          "img_mean": tuple(min(255, round(255 * m)) for m in mean)}
    if spec.startswith("rand"):
        return rand_augment_transform(spec, hp)
    if spec.startswith("augmix"):
        return augment_and_mix_transform(spec, {**hp, "translate_pct": 0.3})
    return auto_augment_transform(spec, hp)


class BatchAugment:
    """Augments a normalised batch ``(B, C, H, W)`` on its own device; see the module
    docstring. ``mean``/``std`` are the per-channel normalisation of the data set (the
    colour and padding operations work on un-normalised pixels in [0, 1])."""

    def __init__(self, cfg: AugmentConfig, mean: tuple[float, ...], std: tuple[float, ...]):
        self.cfg = cfg
        self.mean, self.std = tuple(mean), tuple(std)
        self._aa: dict[int, Any] = {}  # timm policy per image size (its translations scale with it)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if not cfg.enabled:
            return x
        if cfg.preset != "none":
            mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
            std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
            x = x * std + mean  # pixels in [0, 1]
            if cfg.random_resized_crop:
                x = self._resized_crop(x)
            elif cfg.preset == "darts":
                x = self._padded_crop(x)
            if cfg.preset == "ofa":
                x = self._jitter(x)
            if cfg.auto_augment:
                x = self._auto(x)
            x = (x - mean) / std
        if cfg.cutout:
            x = self._cutout(x)
        return x.contiguous()

    def _flips(self, n: int) -> torch.Tensor:
        if not self.cfg.flip:
            return torch.ones(n)
        return torch.where(torch.rand(n) < 0.5, -1.0, 1.0)

    def _resized_crop(self, x: torch.Tensor) -> torch.Tensor:
        """RandomResizedCrop (+ flip) back to the input size, one ``grid_sample``."""
        n = x.shape[0]
        lo, hi = self.cfg.scale
        area = torch.empty(n).uniform_(lo, hi)
        log_r = torch.empty(n).uniform_(math.log(RATIO[0]), math.log(RATIO[1]))
        r = torch.exp(log_r)
        w = torch.sqrt(area * r).clamp(max=1.0)  # fractions of the side
        h = torch.sqrt(area / r).clamp(max=1.0)
        cx = (torch.rand(n) * 2 - 1) * (1 - w)  # centre in [-1, 1] so the box stays inside
        cy = (torch.rand(n) * 2 - 1) * (1 - h)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = w * self._flips(n)
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = h
        theta[:, 1, 2] = cy
        grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _padded_crop(self, x: torch.Tensor) -> torch.Tensor:
        """RandomCrop(size, padding) with zero (black) padding, then flip; exact pixels."""
        n, _, hh, ww = x.shape
        p = self.cfg.padding
        xp = F.pad(x, (p, p, p, p)) if p else x
        oy = torch.randint(0, 2 * p + 1, (n,)).to(x.device)  # drawn on the CPU: one RNG on every device
        ox = torch.randint(0, 2 * p + 1, (n,)).to(x.device)
        rows = (oy[:, None] + torch.arange(hh, device=x.device)[None]).view(n, 1, hh, 1)
        cols = (ox[:, None] + torch.arange(ww, device=x.device)[None])
        flip = self._flips(n).to(x.device) < 0
        cols = torch.where(flip[:, None], cols.flip(1), cols).view(n, 1, 1, ww)
        c = x.shape[1]
        b = torch.arange(n, device=x.device).view(n, 1, 1, 1)
        ch = torch.arange(c, device=x.device).view(1, c, 1, 1)
        return xp[b, ch, rows, cols]

    def _jitter(self, x: torch.Tensor) -> torch.Tensor:
        """ColorJitter(brightness=32/255, saturation=0.5) with per-image factors."""
        n = x.shape[0]
        b, _, s = OFA_JITTER
        fb = torch.empty(n, 1, 1, 1).uniform_(1 - b, 1 + b).to(x.device, x.dtype)
        x = (x * fb).clamp(0, 1)
        if x.shape[1] == 3:
            fs = torch.empty(n, 1, 1, 1).uniform_(1 - s, 1 + s).to(x.device, x.dtype)
            gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
            x = (gray + fs * (x - gray)).clamp(0, 1)
        return x

    def _auto(self, x: torch.Tensor) -> torch.Tensor:
        """timm's auto-augment policy per image (PIL, on the CPU)."""
        from PIL import Image

        size = x.shape[-1]
        if size not in self._aa:
            self._aa[size] = _auto_augment(self.cfg.preset, size, self.mean)
        policy = self._aa[size]
        u8 = (x.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        out = []
        for img in u8:
            arr = img.permute(1, 2, 0).numpy()
            res = np.asarray(policy(Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)))
            out.append(torch.from_numpy(res.copy()).view(*res.shape[:2], -1).permute(2, 0, 1))
        return torch.stack(out).to(x.device, x.dtype) / 255.0

    def _cutout(self, x: torch.Tensor) -> torch.Tensor:
        """Zero one ``cutout``-pixel square per image (centre uniform, clipped at borders)."""
        n, _, hh, ww = x.shape
        half = self.cfg.cutout // 2
        cy = torch.randint(0, hh, (n,)).to(x.device).view(n, 1, 1, 1)
        cx = torch.randint(0, ww, (n,)).to(x.device).view(n, 1, 1, 1)
        ys = torch.arange(hh, device=x.device).view(1, 1, hh, 1)
        xs = torch.arange(ww, device=x.device).view(1, 1, 1, ww)
        hole = (ys >= cy - half) & (ys < cy + half) & (xs >= cx - half) & (xs < cx + half)
        return x.masked_fill(hole, 0.0)


class Cutout:
    """Cutout on one normalised image tensor (C, H, W), for the folder pipeline."""

    def __init__(self, length: int):
        self.length = length

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _, hh, ww = x.shape
        half = self.length // 2
        cy, cx = int(torch.randint(0, hh, ())), int(torch.randint(0, ww, ()))
        x = x.clone()
        x[:, max(0, cy - half):min(hh, cy + half), max(0, cx - half):min(ww, cx + half)] = 0.0
        return x


def pil_train_transform(cfg: AugmentConfig, channels: int, resolution: int, mean: tuple[float, ...],
                        std: tuple[float, ...]) -> Any:
    """The folder data set's training transform (PIL image in, normalised tensor out)."""
    from timm.data import create_transform
    from torchvision import transforms as T

    hflip = 0.5 if cfg.flip else 0.0
    in_ch = 3 if channels == 3 else 1
    if cfg.preset == "darts":
        tfs: list[Any] = [T.Resize(resolution), T.CenterCrop(resolution),
                          T.RandomCrop(resolution, padding=cfg.padding)]
        if cfg.flip:
            tfs.append(T.RandomHorizontalFlip())
        tfs += [T.ToTensor(), T.Normalize(mean, std)]
        tf = T.Compose(tfs)
    elif cfg.random_resized_crop:
        tf = create_transform(input_size=(in_ch, resolution, resolution), is_training=True, scale=cfg.scale,
                              ratio=RATIO, hflip=hflip, color_jitter=OFA_JITTER if cfg.preset == "ofa" else None,
                              auto_augment=cfg.auto_augment, interpolation="bilinear", mean=mean, std=std)
    else:
        tf = create_transform(input_size=(in_ch, resolution, resolution), is_training=False,
                              interpolation="bilinear", mean=mean, std=std, crop_pct=1.0, crop_mode="center")
    if cfg.cutout:
        tf = T.Compose([tf, Cutout(cfg.cutout)])
    return tf
