"""How is a model scored on a benchmark, or on several?"""
