"""The label map shared by every model, metric and figure (ACDC convention)."""

from __future__ import annotations

#: Label value -> structure name. 0 is background.
LABELS: dict[int, str] = {0: "background", 1: "RV", 2: "Myo", 3: "LV"}

#: Foreground structures in label order.
STRUCTURES: tuple[str, ...] = ("RV", "Myo", "LV")

#: Structure name -> label value.
LABEL_OF: dict[str, int] = {name: value for value, name in LABELS.items()}

#: Number of classes a model predicts, background included.
NUM_CLASSES: int = len(LABELS)

#: Display colours (RGB, 0-255) used by every overlay.
COLOURS: dict[str, tuple[int, int, int]] = {
    "RV": (66, 133, 244),
    "Myo": (52, 168, 83),
    "LV": (234, 67, 53),
}
