"""Face detection and cropping with OpenCV's bundled Haar cascade (no download).

The frontal-face Haar cascade ships inside ``opencv-python-headless`` (``cv2.data.haarcascades``).
It is the detector the study can use offline; the crop logic (square box enlarged by a margin,
replicate-padded where it leaves the frame, resized) is the usual deepfake-preprocessing recipe
(FaceForensics++ uses a 1.3x enlarged box).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

CASCADE = "haarcascade_frontalface_default.xml"


class HaarFaceDetector:
    """Largest frontal face in an RGB frame, as ``(x, y, w, h)`` in pixels, or None.

    Frames are downscaled to at most ``max_side`` pixels for speed; the box is mapped back.
    """

    def __init__(self, scale_factor: float = 1.15, min_neighbors: int = 5, min_size_frac: float = 0.06,
                 max_side: int = 360, cascade: str = CASCADE):
        path = Path(cv2.data.haarcascades) / cascade
        if not path.is_file():
            raise FileNotFoundError(f"Haar cascade {path} not found; is opencv-python-headless installed?")
        self._clf = cv2.CascadeClassifier(str(path))
        if self._clf.empty():
            raise ValueError(f"Haar cascade {path} could not be loaded")
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors
        self.min_size_frac, self.max_side = min_size_frac, max_side

    def __call__(self, rgb: np.ndarray) -> tuple[int, int, int, int] | None:
        h, w = rgb.shape[:2]
        s = min(1.0, self.max_side / max(h, w))
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        if s < 1:
            gray = cv2.resize(gray, (int(w * s), int(h * s)), interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        m = max(16, int(self.min_size_frac * min(gray.shape)))
        boxes = self._clf.detectMultiScale(gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                           minSize=(m, m))
        if len(boxes) == 0:
            return None
        x, y, bw, bh = max(boxes, key=lambda b: b[2] * b[3])
        return int(x / s), int(y / s), int(bw / s), int(bh / s)


def crop_face(rgb: np.ndarray, box: tuple[int, int, int, int] | None, size: int = 256,
              margin: float = 1.3) -> np.ndarray:
    """Square crop around ``box`` enlarged ``margin`` times, resized to ``size`` (uint8 RGB).

    ``box=None`` crops the central square of the frame (for face-centred synthetic frames).
    """
    if margin < 1.0:
        raise ValueError(f"margin={margin}: expected >= 1.0 (box enlargement factor)")
    h, w = rgb.shape[:2]
    if box is None:
        side = min(h, w)
        cx, cy = w / 2, h / 2
    else:
        x, y, bw, bh = box
        side = max(bw, bh) * margin
        cx, cy = x + bw / 2, y + bh / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    side = int(round(side))
    pad = max(0, -x0, -y0, x0 + side - w, y0 + side - h)
    if pad:
        rgb = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0 = x0 + pad, y0 + pad
    crop = rgb[y0:y0 + side, x0:x0 + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)
