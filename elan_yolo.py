"""ELAN-YOLO from Python: ``from elan_yolo import Detector`` (see engine/detector.py)."""

from engine.detector import EVENTS, Detector

__all__ = ["EVENTS", "Detector"]
