"""Rate–distortion benchmark of yotocodec against classic codecs and published curves (``python -m benchmarks.rd``)."""
