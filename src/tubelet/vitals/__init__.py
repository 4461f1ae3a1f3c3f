"""Health monitoring from video: heart rate from the skin's colour (remote photoplethysmography, rPPG) and breathing
rate from the chest's motion, by classical signal processing (numpy, scipy, OpenCV; no model, no training).

The pipeline, one module each: `regions` finds the skin of the face and a chest box below it in a frame; `traces`
keeps per-frame measurements only (mean skin RGB, vertical chest and face motion) so a long video costs bounded
memory; `pulse` turns a window of RGB means into a pulse signal (GREEN, CHROM, POS) and a rate with its quality;
`breathing` does the same for the motion; `estimate` cuts windows in seconds and gives one reading per window.

Not a medical device: these are estimates for research and demonstration.
"""
