"""Feature extraction shared by the builders and by prediction (no TFDS): audio decoding and the
spectrogram, video decoding, face detection and alignment, the FER2013 encoder."""
