"""Play inside M's dream (or the real game) with the keyboard, and watch C play.

The pieces, each usable and tested without a window:

* :mod:`~world_models.play.keys`: keys held -> an env action (Doom's left / stay / right,
  CarRacing's steer / gas / brake), and pygame events -> held keys, restart, quit;
* :mod:`~world_models.play.loop`: :class:`~world_models.play.loop.GameLoop`, which steps an
  env with any :class:`~world_models.policies.Policy` (the keyboard, or C) and counts the
  score and the steps, with restart and quit;
* :mod:`~world_models.play.draw`: panels and text composed into one RGB array (what the
  window shows, what is recorded), and the PNG strip of a few frames;
* :mod:`~world_models.play.window`: the pygame window (optional ``play`` extra);
* :mod:`~world_models.play.sessions`: ``world-models play`` and ``world-models watch``.
"""
