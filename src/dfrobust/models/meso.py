"""Meso4 and MesoInception4 (Afchar et al., 2018), ported from the authors' Keras ``classifiers.py``.

Why by hand: no maintained PyTorch package ships MesoNet (timm/torchvision do not), and the
study needs a port that is *numerically identical* to the published Keras models so the
authors' weights (:mod:`dfrobust.models.keras_h5`) reproduce their outputs.

Keras semantics kept where they change numbers:

* ``Conv2D(..., padding='same', activation='relu')`` → conv with symmetric padding, then ReLU
  (the ReLU comes *before* batch-norm, as in the authors' code);
* ``BatchNormalization()`` → ``eps=1e-3`` (Keras default). The running-statistics momentum is
  torch's 0.1, not Keras' 0.99 (torch 0.01): it only matters when training, and the slow Keras
  value leaves the statistics near their initial values after the short CPU trainings here;
* ``MaxPooling2D(pool, padding='same')`` → ``ceil_mode=True`` (identical when the size
  divides, and equivalent to Keras' right/bottom ``-inf`` padding when it does not);
* ``Flatten()`` of a channels-last tensor → the feature map is permuted to NHWC before
  flattening, so the first dense layer sees features in Keras order;
* Meso4 *and* MesoInception4 apply ``LeakyReLU(0.1)`` after the 16-unit dense layer (Meso4's
  ``.h5`` lists no such layer only because it has no weights).

The Keras model ends in one sigmoid unit whose output is **P(real)** for the published
weights (class folders sorted ``df=0, real=1``). The networks here return that pre-sigmoid
value ``z``; :class:`dfrobust.models.Detector` exposes it as the two logits ``[z, 0]``
(real, fake), so ``softmax([z, 0])[0] = sigmoid(z) = P(real)`` and
``p_fake = softmax(...)[1] = 1 - sigmoid(z)`` — the probabilities are unchanged.

At the published 256x256 input the trainable parameter counts equal Keras' 27,977 (Meso4)
and 28,615 (MesoInception4). Other input sizes change only the first dense layer's width.
"""

from __future__ import annotations

import torch
from torch import nn

KERAS_BN_EPS = 1e-3
# torch's default; Keras' 0.99 (torch 0.01) is too slow for short CPU trainings. Inference is unaffected.
KERAS_BN_MOMENTUM = 0.1


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=KERAS_BN_EPS, momentum=KERAS_BN_MOMENTUM)


class _ConvReLU(nn.Module):
    """Keras ``Conv2D(out, k, padding='same', dilation_rate=d, activation='relu')``."""

    def __init__(self, cin: int, cout: int, k: int, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=dilation * (k - 1) // 2, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


class InceptionLayer(nn.Module):
    """The authors' ``InceptionLayer(a, b, c, d)``: four branches concatenated on channels.

    Convolutions are created in the authors' order (x1; x2 1x1, 3x3; x3 1x1, 3x3 dilation 2;
    x4 1x1, 3x3 dilation 3), which is also Keras' naming order ``conv2d_N``.
    """

    def __init__(self, cin: int, a: int, b: int, c: int, d: int):
        super().__init__()
        self.x1 = _ConvReLU(cin, a, 1)
        self.x2a = _ConvReLU(cin, b, 1)
        self.x2b = _ConvReLU(b, b, 3)
        self.x3a = _ConvReLU(cin, c, 1)
        self.x3b = _ConvReLU(c, c, 3, dilation=2)
        self.x4a = _ConvReLU(cin, d, 1)
        self.x4b = _ConvReLU(d, d, 3, dilation=3)
        self.out_channels = a + b + c + d

    def convs(self) -> list[nn.Conv2d]:
        return [m.conv for m in (self.x1, self.x2a, self.x2b, self.x3a, self.x3b, self.x4a, self.x4b)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.x1(x), self.x2b(self.x2a(x)), self.x3b(self.x3a(x)),
                          self.x4b(self.x4a(x))], dim=1)


def _pooled(size: int, pools=(2, 2, 2, 4)) -> int:
    for p in pools:
        size = -(-size // p)  # ceil, as Keras 'same' pooling
    return size


class _MesoHead(nn.Module):
    """Keras ``Flatten → Dropout(0.5) → Dense(16) → LeakyReLU(0.1) → Dropout(0.5) → Dense(1)``."""

    def __init__(self, features: int):
        super().__init__()
        self.negative_slope = 0.1  # LeakyReLU(alpha=0.1); 1.0 would drop it (ablation only)
        self.keras_flatten = True  # flatten NHWC as Keras does; False = torch's NCHW (ablation only)
        self.drop1 = nn.Dropout(0.5)
        self.dense1 = nn.Linear(features, 16)
        self.drop2 = nn.Dropout(0.5)
        self.dense2 = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.permute(0, 2, 3, 1) if self.keras_flatten else x).flatten(1)  # Keras flattens NHWC
        x = nn.functional.leaky_relu(self.dense1(self.drop1(x)), self.negative_slope)
        return self.dense2(self.drop2(x)).squeeze(1)  # z: logit of the sigmoid unit


class Meso4Net(nn.Module):
    """Meso4 trunk; ``forward`` returns the pre-sigmoid output ``z`` of shape [N]."""

    def __init__(self, input_size: int = 256):
        super().__init__()
        self.conv1, self.bn1 = _ConvReLU(3, 8, 3), _bn(8)
        self.conv2, self.bn2 = _ConvReLU(8, 8, 5), _bn(8)
        self.conv3, self.bn3 = _ConvReLU(8, 16, 5), _bn(16)
        self.conv4, self.bn4 = _ConvReLU(16, 16, 5), _bn(16)
        self.pool2 = nn.MaxPool2d(2, ceil_mode=True)
        self.pool4 = nn.MaxPool2d(4, ceil_mode=True)
        self.head = _MesoHead(16 * _pooled(input_size) ** 2)

    def keras_layers(self) -> dict[str, list[nn.Module]]:
        """Modules with weights per Keras layer kind, in Keras creation (= naming) order."""
        return {"conv2d": [self.conv1.conv, self.conv2.conv, self.conv3.conv, self.conv4.conv],
                "batch_normalization": [self.bn1, self.bn2, self.bn3, self.bn4],
                "dense": [self.head.dense1, self.head.dense2]}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool2(self.bn1(self.conv1(x)))
        x = self.pool2(self.bn2(self.conv2(x)))
        x = self.pool2(self.bn3(self.conv3(x)))
        return self.bn4(self.conv4(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool4(self.features(x)))


class MesoInception4Net(nn.Module):
    """MesoInception4 trunk; ``forward`` returns the pre-sigmoid output ``z`` of shape [N]."""

    def __init__(self, input_size: int = 256):
        super().__init__()
        self.inc1 = InceptionLayer(3, 1, 4, 4, 2)
        self.bn1 = _bn(self.inc1.out_channels)
        self.inc2 = InceptionLayer(self.inc1.out_channels, 2, 4, 4, 2)
        self.bn2 = _bn(self.inc2.out_channels)
        self.conv3, self.bn3 = _ConvReLU(self.inc2.out_channels, 16, 5), _bn(16)
        self.conv4, self.bn4 = _ConvReLU(16, 16, 5), _bn(16)
        self.pool2 = nn.MaxPool2d(2, ceil_mode=True)
        self.pool4 = nn.MaxPool2d(4, ceil_mode=True)
        self.head = _MesoHead(16 * _pooled(input_size) ** 2)

    def keras_layers(self) -> dict[str, list[nn.Module]]:
        return {"conv2d": [*self.inc1.convs(), *self.inc2.convs(), self.conv3.conv, self.conv4.conv],
                "batch_normalization": [self.bn1, self.bn2, self.bn3, self.bn4],
                "dense": [self.head.dense1, self.head.dense2]}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool2(self.bn1(self.inc1(x)))
        x = self.pool2(self.bn2(self.inc2(x)))
        x = self.pool2(self.bn3(self.conv3(x)))
        return self.bn4(self.conv4(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool4(self.features(x)))
