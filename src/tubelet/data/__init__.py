"""Datasets: class folders and manifests, the bad-file policy, and the sample-data generator."""

from tubelet.data.manifest import Sample, VideoDataset, load_dataset, read_manifest, read_samples

__all__ = ["Sample", "VideoDataset", "load_dataset", "read_manifest", "read_samples"]
