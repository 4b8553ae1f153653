"""The pre-registered study of issue 31: slice choice by measurement, shuffled weights, the recall study's arms,
learning-rate sweep and statistics (see ``results/science/PROTOCOL.md``)."""
