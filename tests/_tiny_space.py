"""The smallest mbv3 space the subprocess tests (error catalogue, kill artifacts) train
in seconds: YAML text indented to sit under an experiment's ``space:`` key."""
from __future__ import annotations

TINY_SPACE = """\
  family: mbv3
  name: tiny
  input_channels: 1
  num_classes: 10
  resolutions: [10, 12]
  stem: {width: 8, stride: 1, act: h_swish}
  first_block: {width: 8, act: relu}
  stages:
    - {width: 8, stride: 1, depths: [1, 2], kernels: [3, 5], expands: [2, 3], se: false, act: relu}
    - {width: 16, stride: 2, depths: [1, 2], kernels: [3, 5], expands: [2, 3], se: true, act: h_swish}
  head: {final_expand: 32, feature_mix: 48, dropout: 0.0}
"""
