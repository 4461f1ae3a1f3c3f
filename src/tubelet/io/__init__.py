"""Video I/O that respects time: probe, decode by seconds, audio, writers. numpy in, numpy out."""

from tubelet.io.audio import Audio, decode_audio
from tubelet.io.decode import Clip, decode, sample_times
from tubelet.io.probe import VideoInfo, probe
from tubelet.io.write import write_contact_sheet, write_gif, write_video

__all__ = [
    "Audio",
    "Clip",
    "VideoInfo",
    "decode",
    "decode_audio",
    "probe",
    "sample_times",
    "write_contact_sheet",
    "write_gif",
    "write_video",
]
