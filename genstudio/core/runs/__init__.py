"""What a run leaves on disk and how it is read back: the run folder (run.py), checkpoints,
atomic writes, images with their metadata, where things live (paths, preferences) and the
shipped pretrained runs."""
