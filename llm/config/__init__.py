"""Configuration: what can a run be told (TrainConfig, presets, YAML, --set), and is it valid?"""
