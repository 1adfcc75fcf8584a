"""Run state: what does a run set up, write and restore (folder, checkpoints, RNG streams, logs)?"""
