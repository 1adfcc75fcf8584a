"""Data: where do the prompts come from (file loaders and readers, the tiny model and its tasks)?"""
