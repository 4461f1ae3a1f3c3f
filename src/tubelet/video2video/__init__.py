"""Video to video: classical baselines (interpolation, denoising, scene cuts) and the metrics they are measured by.

The learned particle models of issue 18 must beat these baselines; they live here so the commands, the benchmark and
the later learned tasks share one definition of each.
"""
