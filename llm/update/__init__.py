"""Update: how does a batch of experience become optimiser steps (batching, log-probs, K steps)?"""
