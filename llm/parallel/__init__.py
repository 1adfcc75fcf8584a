"""Parallel: how do 1 or N processes share a run (the communicator, FSDP2, its checkpoint glue)?"""
