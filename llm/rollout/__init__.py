"""Rollout: how are completions sampled and turned into a scored, shaped batch of experience?"""
