"""Probing the frozen substrate: synthetic tasks (associative recall, bit memory, bit XOR), the four arms that
control the frozen-pretrained claim, and head-level measurements (text copy score, task ablation)."""
