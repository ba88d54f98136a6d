"""Building big maps: embedding checkpointed in a work folder so that an interrupted build
resumes (``resumable``), on this machine or on a Ray cluster (``raycluster``)."""
