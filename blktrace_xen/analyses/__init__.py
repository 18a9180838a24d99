"""Rule families over the stream frames: frames in, findings out."""
