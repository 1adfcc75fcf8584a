"""Drop-ins for other training frameworks, each imported explicitly by its user.

- ``ticgrpo.integrations.trl``: ``TicGRPOTrainer``, a TRL ``GRPOTrainer`` whose loss is
  ``ticgrpo.policy_loss`` (``pip install "ticgrpo[trl]"``).
- ``ticgrpo.integrations.verl``: our methods in verl's policy-loss registry, as
  ``actor_rollout_ref.actor.policy_loss.loss_mode=ticgrpo_<method>``.

Nothing here is imported by ``import ticgrpo``: the core needs torch only. See
``docs/INTEGRATIONS.md`` for usage, the version pins and the framework internals each relies on.
"""
