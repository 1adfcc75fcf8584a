"""Rewards: how is a completion scored (the registry, the maths checker, its worker and guards)?"""
